"""Long-running processes that need the work pools: two Prefect workers and the dev task runner."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from devstack.config import DEFAULT_DEPLOYER_POOL, DEFAULT_WORK_POOL, PREFECT_API_URL
from devstack.services import venv_tool

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
RUNNER_MODULE = "devstack.runner"


@dataclass(frozen=True)
class Worker:
    key: str  # name of its pidfile and log file
    label: str
    argv: list[str]
    # Work pool that must exist first, and the worker name the Prefect API lists for it;
    # both None for the task runner.
    pool: str | None
    prefect_name: str | None


def work_pool_names() -> tuple[str, str]:
    """Return the ECS and deployer pool names from the environment, with their defaults."""
    ecs = os.environ.get("META_FLOWS_WORK_POOL") or DEFAULT_WORK_POOL
    deployer = os.environ.get("META_FLOWS_DEPLOYER_POOL") or DEFAULT_DEPLOYER_POOL
    return ecs, deployer


def prefect_worker(key: str, label: str, pool: str, pool_type: str) -> Worker:
    name = f"devstack-{key}"
    argv = [
        venv_tool("prefect"),
        "worker",
        "start",
        "--pool",
        pool,
        "--type",
        pool_type,
        "--name",
        name,
        "--no-create-pool-if-not-found",
        # Never pip-install worker packages at start: they come from requirements.txt.
        "--install-policy",
        "never",
    ]
    return Worker(key=key, label=label, argv=argv, pool=pool, prefect_name=name)


def runner_available() -> bool:
    return importlib.util.find_spec(RUNNER_MODULE) is not None


def worker_plan() -> list[Worker]:
    """Return the workers in start order, with the task runner only if its module exists."""
    ecs_pool, deployer_pool = work_pool_names()
    plan = [
        prefect_worker("ecs-worker", "ecs worker", ecs_pool, "ecs"),
        prefect_worker("deployer-worker", "deployer worker", deployer_pool, "process"),
    ]
    if runner_available():
        plan.append(
            Worker(
                "task-runner",
                "task runner",
                [sys.executable, "-m", RUNNER_MODULE],
                None,
                None,
            )
        )
    return plan


def all_worker_keys() -> list[str]:
    """Return every pidfile name `workers` may have written, whether or not the runner exists now."""
    return ["task-runner", "deployer-worker", "ecs-worker"]


def api_request(method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """Send one request to the local Prefect API, and return its status and decoded JSON body."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"{PREFECT_API_URL}{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    try:
        with _DIRECT.open(request, timeout=5) as response:
            return int(response.status), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, None


def pool_exists(pool: str) -> bool:
    status, _ = api_request("GET", f"/work_pools/{urllib.parse.quote(pool, safe='')}")
    if status == 404:
        return False
    if status != 200:
        raise RuntimeError(f"GET work pool {pool!r} from {PREFECT_API_URL} failed with HTTP {status}")
    return True


def missing_pool_message(pool: str) -> str:
    return f"work pool '{pool}' not found: run `python -m meta_flows.bootstrap` first"


def worker_seen(pool: str, name: str, since: float) -> bool:
    """Return True when the API lists worker `name` on `pool` with a heartbeat at or after `since`."""
    try:
        status, workers = api_request(
            "POST",
            f"/work_pools/{urllib.parse.quote(pool, safe='')}/workers/filter",
            {},
        )
    except (urllib.error.URLError, OSError):
        return False
    if status != 200 or not isinstance(workers, list):
        return False
    return any(heartbeat_after(worker, name, since) for worker in workers)


def heartbeat_after(worker: dict[str, Any], name: str, since: float) -> bool:
    if worker.get("name") != name or not worker.get("last_heartbeat_time"):
        return False
    heartbeat = datetime.fromisoformat(str(worker["last_heartbeat_time"]))
    # Heartbeat times come from the server's clock on this machine, in whole microseconds.
    return heartbeat.timestamp() >= since - 1.0


def worker_env(stack: dict[str, str]) -> dict[str, str]:
    """Environment of a worker: this process's, the stack's variables, and the venv first on PATH."""
    env = dict(os.environ)
    env.update(stack)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([venv_bin, env.get("PATH", "")])
    return env
