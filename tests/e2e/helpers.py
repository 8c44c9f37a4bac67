"""Read-only look-ups the end-to-end tests make: Prefect API, registry, runner records."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import boto3
import requests

FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
MANIFEST_ACCEPT = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"
# The shared SQLite server returns 503 while another write holds the database lock.
SERVER_BUSY_SECONDS = 60


def api_request(env: dict[str, str], method: str, path: str, body: Any = None) -> Any:
    """Send one Prefect API request and return its JSON body, or None when it has none.

    The request is repeated while the server returns 503, for at most SERVER_BUSY_SECONDS.
    Repeating a POST is safe here because the server commits nothing when it returns 503.
    """
    deadline = time.monotonic() + SERVER_BUSY_SECONDS
    while True:
        reply = requests.request(method, f"{env['PREFECT_API_URL']}{path}", json=body, timeout=30)
        if reply.status_code != 503 or time.monotonic() > deadline:
            reply.raise_for_status()
            return reply.json() if reply.content else None
        time.sleep(1)


def api_get(env: dict[str, str], path: str) -> Any:
    return api_request(env, "GET", path)


def read_deployment(env: dict[str, str], full_name: str) -> dict[str, Any]:
    return api_get(env, f"/deployments/name/{full_name}")  # type: ignore[no-any-return]


def wait_for_final_state(env: dict[str, str], flow_run_id: str, timeout: float) -> dict[str, Any]:
    """Poll the flow run until it reaches a final state; raise AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    flow_run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        flow_run = api_get(env, f"/flow_runs/{flow_run_id}")
        if flow_run.get("state_type") in FINAL_STATES:
            return flow_run
        time.sleep(1)
    raise AssertionError(f"flow run {flow_run_id} not final after {timeout} s: {flow_run.get('state_type')}")


def flow_run_logs(env: dict[str, str], flow_run_id: str) -> list[dict[str, Any]]:
    """Every log line the server holds for one flow run, oldest first."""
    logs: list[dict[str, Any]] = []
    while True:
        body = {
            "logs": {"flow_run_id": {"any_": [flow_run_id]}},
            "sort": "TIMESTAMP_ASC",
            "limit": 200,
            "offset": len(logs),
        }
        page = api_request(env, "POST", "/logs/filter", body)
        logs += page
        if len(page) < 200:
            return logs


def wait_for_flow_run_logs(
    env: dict[str, str], flow_run_id: str, needles: list[str], timeout: float
) -> list[dict[str, Any]]:
    """Poll the flow run's logs until every needle appears in some line; return them all.

    A flow run's final state can reach the server before the run's last log batch does, so a
    test that reads logs right after the final state must wait for the lines it needs.
    """
    deadline = time.monotonic() + timeout
    while True:
        logs = flow_run_logs(env, flow_run_id)
        text = "\n".join(log["message"] for log in logs)
        missing = [needle for needle in needles if needle not in text]
        if not missing:
            return logs
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"flow run {flow_run_id}: no log line with {missing} after {timeout} s:\n{text[-3000:]}"
            )
        time.sleep(0.5)


def create_flow_run(env: dict[str, str], deployment_id: str, parameters: dict[str, Any]) -> str:
    flow_run = api_request(env, "POST", f"/deployments/{deployment_id}/create_flow_run", {"parameters": parameters})
    return str(flow_run["id"])


def registry_login(env: dict[str, str]) -> tuple[str, str]:
    ecr = boto3.client("ecr", region_name=env["AWS_REGION"], endpoint_url=env["AWS_ENDPOINT_URL"])
    token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    user, _, password = base64.b64decode(token).decode().partition(":")
    return user, password


def registry_digest(env: dict[str, str], image: str) -> str | None:
    """Return the digest the local registry holds for `image` (host/repo:tag), or None."""
    host, _, rest = image.partition("/")
    repository, _, tag = rest.rpartition(":")
    reply = requests.head(
        f"http://{host}/v2/{repository}/manifests/{tag}",
        auth=registry_login(env),
        headers={"Accept": MANIFEST_ACCEPT},
        timeout=10,
    )
    if reply.status_code == 404:
        return None
    reply.raise_for_status()
    return reply.headers["Docker-Content-Digest"]


def registry_tags(env: dict[str, str], repository: str) -> list[str]:
    host = env["META_FLOWS_REGISTRY_HOST"]
    reply = requests.get(f"http://{host}/v2/{repository}/tags/list", auth=registry_login(env), timeout=10)
    if reply.status_code == 404:
        return []
    reply.raise_for_status()
    return sorted(reply.json().get("tags") or [])


def runner_record(env: dict[str, str], flow_run_id: str) -> dict[str, Any] | None:
    """Return the task runner's record of the ECS task that ran `flow_run_id`, if any."""
    path = Path(env["DEVSTACK_STATE_DIR"]) / "runner" / "tasks.jsonl"
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record.get("flow_run_id") == flow_run_id:
            return record  # type: ignore[no-any-return]
    return None
