"""Snapshots of everything the product may change, to prove a failed run changed nothing.

A snapshot holds the emulator's resources (ECS clusters, ECR repositories, IAM roles, secrets),
the registry's repositories with each tag's manifest digest, and the Prefect server's blocks,
work pools, work queues, deployments and global concurrency limits. Other test sessions share
the stack, so a snapshot keeps only names that contain the session's unique suffix; every
name a session's product run can create contains it. Fields the server bumps on its own (a
queue's last poll, a pool's status) are left out, so two snapshots of an idle session compare
equal.
"""

from __future__ import annotations

import base64
from typing import Any

import boto3
import requests

MANIFEST_ACCEPT = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"
PAGE = 200
# The meta-flows' own deployments (deploy-flow/default and the others) have one name on the
# whole server, so every session's bootstrap moves them to its own deployer pool. They are left
# out; a session's flow deployments, whose names are its own, stay in.
SHARED_DEPLOYMENT_NAMES = {"default"}
VOLATILE_KEYS = {"updated", "last_polled", "status", "last_heartbeat_time", "active_slots", "slot_decay_per_second"}


def _strip_volatile(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_volatile(v) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [_strip_volatile(v) for v in value]
    return value


def _mine(names: Any, suffix: str) -> list[str]:
    return sorted(str(name) for name in names if suffix in str(name))


def aws_snapshot(env: dict[str, str], suffix: str) -> dict[str, Any]:
    def client(service: str) -> Any:
        return boto3.client(service, region_name=env["UPSTREAM_REGION"], endpoint_url=env["AWS_UPSTREAM_URL"])

    ecs, ecr, iam = client("ecs"), client("ecr"), client("iam")
    return {
        "clusters": _mine(ecs.list_clusters()["clusterArns"], suffix),
        "repositories": _mine((r["repositoryName"] for r in ecr.describe_repositories()["repositories"]), suffix),
        "roles": _mine((r["RoleName"] for r in iam.list_roles()["Roles"]), suffix),
        "secrets": _mine((s["Name"] for s in client("secretsmanager").list_secrets()["SecretList"]), suffix),
    }


def registry_login(env: dict[str, str]) -> tuple[str, str]:
    ecr = boto3.client("ecr", region_name=env["UPSTREAM_REGION"], endpoint_url=env["AWS_UPSTREAM_URL"])
    token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    user, _, password = base64.b64decode(token).decode().partition(":")
    return user, password


def registry_snapshot(env: dict[str, str], suffix: str) -> dict[str, Any]:
    """Return {repository: {tag: digest}} for the registry's repositories whose name has `suffix`."""
    base = f"http://{env['REGISTRY_UPSTREAM']}/v2"
    auth = registry_login(env)
    catalog = requests.get(f"{base}/_catalog?n=10000", auth=auth, timeout=30).json().get("repositories") or []
    images: dict[str, Any] = {}
    for repository in _mine(catalog, suffix):
        tags = requests.get(f"{base}/{repository}/tags/list", auth=auth, timeout=30).json().get("tags") or []
        images[repository] = {
            tag: requests.head(
                f"{base}/{repository}/manifests/{tag}", auth=auth, headers={"Accept": MANIFEST_ACCEPT}, timeout=30
            ).headers.get("Docker-Content-Digest")
            for tag in sorted(tags)
        }
    return images


def prefect_snapshot(env: dict[str, str], suffix: str) -> dict[str, Any]:
    api = env["UPSTREAM_PREFECT_API_URL"]

    def post(path: str, body: dict[str, Any] | None = None) -> list[Any]:
        """Read every page of a filter endpoint; the server returns at most PAGE items per request."""
        items: list[Any] = []
        while True:
            query = {**(body or {}), "limit": PAGE, "offset": len(items)}
            reply = requests.post(f"{api}{path}", json=query, timeout=30)
            reply.raise_for_status()
            page = reply.json()
            items += page
            if len(page) < PAGE:
                return [_strip_volatile(item) for item in items]

    blocks = post("/block_documents/filter")
    queues = post("/work_queues/filter")
    pools = {p["name"]: p for p in post("/work_pools/filter") if suffix in p["name"]}
    deployments = post("/deployments/filter", {"work_pools": {"name": {"any_": sorted(pools)}}}) if pools else []
    return {
        "blocks": sorted((b["name"], b["id"], str(b["data"])) for b in blocks if suffix in str(b["name"])),
        "pools": pools,
        "queues": sorted((q["work_pool_name"], q["name"], q["id"]) for q in queues if suffix in q["work_pool_name"]),
        "deployments": {d["id"]: d for d in deployments if d["name"] not in SHARED_DEPLOYMENT_NAMES},
        "limits": sorted(
            (c["name"], c["limit"], c["active"]) for c in post("/v2/concurrency_limits/filter") if suffix in c["name"]
        ),
    }


def take_snapshot(env: dict[str, str], suffix: str) -> dict[str, Any]:
    """Return this session's part of the emulator, the registry and the Prefect server."""
    return {
        "aws": aws_snapshot(env, suffix),
        "registry": registry_snapshot(env, suffix),
        "prefect": prefect_snapshot(env, suffix),
    }


def describe_difference(before: dict[str, Any], after: dict[str, Any]) -> str:
    """Return the keys whose values differ, for an assertion message."""
    changed = []
    for area in before:
        for key in before[area]:
            if before[area][key] != after[area].get(key):
                changed.append(f"{area}.{key}")
    return ", ".join(changed) or "nothing"
