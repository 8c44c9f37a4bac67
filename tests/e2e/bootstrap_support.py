"""Helpers of the bootstrap plan tests: session names, AWS and Prefect look-ups, request counting."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import boto3
import requests
import yaml

from devstack.fault_proxy import Request
from tests.e2e.conftest import PROJECT_ROOT, run_command
from tests.e2e.counting_proxy import CountingProxy

AWS_PROXY_PORT = 5032
PREFECT_PROXY_PORT = 5033
READ_PREFIXES = ("Describe", "List", "Get", "BatchGet", "BatchCheck")
PREFECT_OBJECT_PATHS = (
    "/block_documents",
    "/block_types",
    "/block_schemas",
    "/work_pools",
    "/work_queues",
    "/deployments",
    "/variables",
    "/concurrency_limits",
    "/v2/concurrency_limits",
)
READ_ONLY_POST_SUFFIXES = ("/filter", "/count", "/paginate")


def isolated_project(suffix: str) -> Path:
    """Copy the project's declarations to a temporary folder, renaming every deployment.

    Deployment names are one per server (`deploy-flow/default`, `hello/hello`), and parallel
    sessions on the shared server would otherwise point them at each other's pools.
    """
    root = Path(tempfile.mkdtemp(prefix=f"meta-flows-{suffix}-"))
    shutil.copytree(PROJECT_ROOT / "flows", root / "flows")
    shutil.copytree(PROJECT_ROOT / "meta_flows", root / "meta_flows", ignore=shutil.ignore_patterns("__pycache__"))
    declarations = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())
    for entry in declarations["deployments"]:
        entry["name"] = f"p3-{suffix}" if entry["entrypoint"].startswith("meta_flows/") else f"{entry['name']}-{suffix}"
    (root / "prefect.yaml").write_text(yaml.safe_dump(declarations, sort_keys=False))
    return root


def session_env(label: str) -> dict[str, str]:
    """Return the stack's environment with names unique to this test session and `label`."""
    suffix = f"{label}-{uuid.uuid4().hex[:6]}"
    env = dict(os.environ)
    env["META_FLOWS_PROJECT_ROOT"] = str(isolated_project(suffix))
    env.update(
        {
            "META_FLOWS_WORK_POOL": f"p3-ecs-{suffix}",
            "META_FLOWS_DEPLOYER_POOL": f"p3-deployer-{suffix}",
            "META_FLOWS_CLUSTER": f"p3-{suffix}",
            "META_FLOWS_REPOSITORY_PREFIX": f"p3-{suffix}",
            "META_FLOWS_CREDENTIALS_BLOCK": f"p3-{suffix}-aws",
            "META_FLOWS_TASK_SETTINGS_BLOCK": f"p3-{suffix}-ecs",
            "PREFECT_LOGGING_LEVEL": "WARNING",
        }
    )
    return env


def bootstrap(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_command([sys.executable, "-m", "meta_flows.bootstrap", *args], env, timeout=300)


def teardown(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_command([sys.executable, "-m", "meta_flows.teardown"], env, timeout=300)


def rows_of(output: str) -> dict[tuple[str, str], str]:
    """Parse the printed table into {(resource, name): action}."""
    table = output.split("\n\n")[0]
    header_index = next(i for i, line in enumerate(table.splitlines()) if line.startswith("resource"))
    rows = {}
    for line in table.splitlines()[header_index + 1 :]:
        if not line.strip() or line.startswith("Nothing to do"):
            continue
        parts = [p for p in line.split("  ") if p.strip()]
        rows[(parts[0].strip(), parts[1].strip())] = parts[2].strip()
    return rows


def aws(env: dict[str, str], service: str) -> Any:
    return boto3.client(service, region_name=env["AWS_REGION"], endpoint_url=env["AWS_ENDPOINT_URL"])


def aws_snapshot(env: dict[str, str]) -> dict[str, Any]:
    """Return this session's resources in the emulator, by the names bootstrap derives from `env`."""
    cluster, prefix = env["META_FLOWS_CLUSTER"], env["META_FLOWS_REPOSITORY_PREFIX"]
    queue = f"{env['META_FLOWS_WORK_POOL']}-ecs-task-events"
    repositories = aws(env, "ecr").describe_repositories()["repositories"]
    return {
        "clusters": aws(env, "ecs").describe_clusters(clusters=[cluster], include=["TAGS"])["clusters"],
        "repositories": sorted(
            (r["repositoryName"], r["imageTagMutability"])
            for r in repositories
            if r["repositoryName"].startswith(f"{prefix}/")
        ),
        "roles": sorted(
            r["RoleName"] for r in aws(env, "iam").list_roles()["Roles"] if r["RoleName"].startswith(f"{cluster}-")
        ),
        "log_groups": [
            (g["logGroupName"], g.get("retentionInDays"))
            for g in aws(env, "logs").describe_log_groups(logGroupNamePrefix=f"/prefect/{cluster}")["logGroups"]
        ],
        "queues": aws(env, "sqs").list_queues(QueueNamePrefix=queue).get("QueueUrls", []),
        "rules": [r["Name"] for r in aws(env, "events").list_rules(NamePrefix=queue)["Rules"]],
        "task_definitions": aws(env, "ecs").list_task_definitions(familyPrefix=cluster)["taskDefinitionArns"],
    }


def prefect_snapshot(env: dict[str, str]) -> dict[str, Any]:
    """Return this session's blocks, pools, queues and deployments, and all variables and limits.

    Other sessions write to the same server at the same time, so objects are narrowed to the
    names this session's settings give; variables and limits are few and compared whole. The
    meta-flows' own deployments have one name per server, and every session's bootstrap points
    them at its own deployer pool, so they are left out here: the counting proxy shows that a
    dry run writes no deployment.
    """
    api = env["PREFECT_API_URL"]
    pools = {env["META_FLOWS_WORK_POOL"], env["META_FLOWS_DEPLOYER_POOL"]}
    blocks = {env["META_FLOWS_CREDENTIALS_BLOCK"], env["META_FLOWS_TASK_SETTINGS_BLOCK"]}

    def post(path: str) -> list[dict[str, Any]]:
        reply = requests.post(f"{api}{path}", json={}, timeout=10)
        reply.raise_for_status()
        return reply.json()  # type: ignore[no-any-return]

    def strip(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        volatile = {"updated", "last_polled", "status", "last_heartbeat_time", "active_slots"}
        return sorted(({k: v for k, v in i.items() if k not in volatile} for i in items), key=lambda i: str(i["id"]))

    return {
        "blocks": strip([b for b in post("/block_documents/filter") if b["name"] in blocks]),
        "pools": strip([p for p in post("/work_pools/filter") if p["name"] in pools]),
        "queues": strip([q for q in post("/work_queues/filter") if q.get("work_pool_name") in pools]),
        "deployments": strip(
            [
                d
                for d in post("/deployments/filter")
                if d.get("work_pool_name") in pools and d.get("work_pool_name") != env["META_FLOWS_DEPLOYER_POOL"]
            ]
        ),
        "variables": strip(post("/variables/filter")),
        "limits": strip(post("/concurrency_limits/filter")),
        "global_limits": strip(post("/v2/concurrency_limits/filter")),
    }


def mutating_aws_calls(requests_seen: list[Request]) -> list[str]:
    actions = [r.aws_action for r in requests_seen]
    return [a for a in actions if a and not a.startswith(READ_PREFIXES)]


def prefect_object_writes(requests_seen: list[Request]) -> list[str]:
    writes = []
    for request in requests_seen:
        path = request.path.split("?")[0].removeprefix("/api")
        if request.method == "GET" or not path.startswith(PREFECT_OBJECT_PATHS):
            continue
        if request.method == "POST" and path.rstrip("/").endswith(READ_ONLY_POST_SUFFIXES):
            continue
        writes.append(f"{request.method} {path}")
    return writes


class Counters:
    """The two counting proxies: product to emulator, product to Prefect API."""

    def __init__(self, env: dict[str, str]) -> None:
        aws_port = int(env["AWS_ENDPOINT_URL"].rpartition(":")[2])
        prefect_port = int(env["PREFECT_API_URL"].split(":")[2].split("/")[0])
        self.aws = CountingProxy(AWS_PROXY_PORT, aws_port)
        self.prefect = CountingProxy(PREFECT_PROXY_PORT, prefect_port)

    def __enter__(self) -> Counters:
        self.aws.start()
        self.prefect.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.aws.stop()
        self.prefect.stop()

    def route(self, env: dict[str, str]) -> dict[str, str]:
        """Return `env` with the product's AWS and Prefect traffic sent through the proxies."""
        routed = dict(env)
        routed["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{AWS_PROXY_PORT}"
        routed["PREFECT_API_URL"] = f"http://127.0.0.1:{PREFECT_PROXY_PORT}/api"
        return routed

    def clear(self) -> None:
        self.aws.clear()
        self.prefect.clear()


SERVER_WIDE = ("variables", "limits", "global_limits")


def assert_prefect_unchanged(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Check this session's objects are identical, and no server-wide object changed or vanished.

    Other sessions may add variables and limits meanwhile; that this process added none is
    what the counting proxy shows.
    """
    for key, items in before.items():
        if key in SERVER_WIDE:
            still_there = [item for item in items if item in after[key]]
            assert still_there == items, f"{key} changed: {items} -> {after[key]}"
        else:
            assert after[key] == items, f"{key} changed: {items} -> {after[key]}"
