"""Fixtures of the end-to-end tests: the local stack, session-unique names, and real workers.

`make test` starts the stack and exports its environment. Each test session bootstraps its own
pools, cluster, repositories and blocks under a unique suffix. It starts its own ECS worker and
deployer worker on those pools, while the stack's one task runner runs the ECS tasks.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

PROJECT_ROOT = Path(__file__).resolve().parents[2]
STACK_VARIABLES = [
    "PREFECT_API_URL",
    "AWS_ENDPOINT_URL",
    "DOCKER_HOST",
    "META_FLOWS_REGISTRY_HOST",
    "DEVSTACK_STATE_DIR",
]
WORKER_START_SECONDS = 90


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


def run_command(args: list[str], env: dict[str, str], timeout: int = 900) -> subprocess.CompletedProcess[str]:
    """Run a command of the product the way a user would, capturing its output."""
    return subprocess.run(args, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout)


def wait_for(condition, timeout: float, message: str, interval: float = 0.5):  # type: ignore[no-untyped-def]
    """Poll `condition` until it returns a truthy value; fail with `message` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s: {message}")


@pytest.fixture(scope="session")
def stack_env() -> dict[str, str]:
    missing = [name for name in STACK_VARIABLES if not os.environ.get(name)]
    if missing:
        pytest.fail(f"local stack environment missing ({', '.join(missing)}): run the tests with `make test`")
    suffix = uuid.uuid4().hex[:6]
    env = dict(os.environ)
    env.update(
        {
            "META_FLOWS_WORK_POOL": f"e2e-ecs-{suffix}",
            "META_FLOWS_DEPLOYER_POOL": f"e2e-deployer-{suffix}",
            "META_FLOWS_CLUSTER": f"e2e-{suffix}",
            "META_FLOWS_REPOSITORY_PREFIX": f"e2e-{suffix}",
            "META_FLOWS_CREDENTIALS_BLOCK": f"e2e-{suffix}-aws",
            "META_FLOWS_TASK_SETTINGS_BLOCK": f"e2e-{suffix}-ecs",
            "PREFECT_LOGGING_LEVEL": "INFO",
        }
    )
    return env


@pytest.fixture(scope="session")
def bootstrap_outputs(stack_env: dict[str, str]) -> list[subprocess.CompletedProcess[str]]:
    """Run bootstrap twice in a row, as a user would on a first set-up and on a re-run."""
    first = run_command([sys.executable, "-m", "meta_flows.bootstrap"], stack_env)
    assert first.returncode == 0, first.stdout + first.stderr
    second = run_command([sys.executable, "-m", "meta_flows.bootstrap"], stack_env)
    assert second.returncode == 0, second.stdout + second.stderr
    return [first, second]


def pool_has_worker(api: str, pool: str) -> bool:
    reply = requests.post(f"{api}/work_pools/{pool}/workers/filter", json={}, timeout=10)
    return reply.status_code == 200 and any(w.get("status") == "ONLINE" for w in reply.json())


@pytest.fixture(scope="session")
def workers(
    stack_env: dict[str, str],
    bootstrap_outputs: list[subprocess.CompletedProcess[str]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, str]]:
    """Start the ECS worker and the deployer worker on this session's pools, and the stack's runner."""
    runner = run_command([sys.executable, "-m", "devstack", "runner"], stack_env, timeout=120)
    assert runner.returncode == 0, runner.stdout + runner.stderr

    logs = tmp_path_factory.mktemp("workers")
    processes = []
    for pool_variable, pool_type in (("META_FLOWS_WORK_POOL", "ecs"), ("META_FLOWS_DEPLOYER_POOL", "process")):
        pool = stack_env[pool_variable]
        log = open(logs / f"{pool_type}.log", "w")  # noqa: SIM115 - closed with the process
        command = [
            *(sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", pool_type),
            *("--no-create-pool-if-not-found", "--install-policy", "never"),
        ]
        processes.append(
            (subprocess.Popen(command, env=stack_env, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT), log)
        )
        wait_for(
            lambda pool=pool: pool_has_worker(stack_env["PREFECT_API_URL"], pool),
            WORKER_START_SECONDS,
            f"{pool_type} worker on pool {pool} did not come online; see {log.name}",
        )
    yield {"logs": str(logs)}
    for process, log in processes:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
