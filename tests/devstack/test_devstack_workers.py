"""Unit tests of the worker commands, the missing-pool message and heartbeat matching."""

import pytest

from devstack import workers


def test_missing_pool_message() -> None:
    assert workers.missing_pool_message("ecs-pool") == (
        "work pool 'ecs-pool' not found: run `python -m meta_flows.bootstrap` first"
    )


def test_worker_never_creates_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("META_FLOWS_WORK_POOL", raising=False)
    monkeypatch.setenv("META_FLOWS_DEPLOYER_POOL", "deploy-here")

    ecs, deployer = workers.worker_plan()[:2]

    assert ecs.pool == "ecs-pool"
    assert ecs.argv[ecs.argv.index("--type") + 1] == "ecs"
    assert deployer.pool == "deploy-here"
    assert deployer.argv[deployer.argv.index("--type") + 1] == "process"
    for worker in (ecs, deployer):
        assert "--no-create-pool-if-not-found" in worker.argv
        assert worker.argv[worker.argv.index("--name") + 1] == worker.prefect_name


def test_heartbeat_matching() -> None:
    since = 1_800_000_000.0
    worker = {
        "name": "devstack-ecs-worker",
        "last_heartbeat_time": "2027-01-15T08:00:05Z",
    }

    assert workers.heartbeat_after(worker, "devstack-ecs-worker", since)
    assert not workers.heartbeat_after(worker, "devstack-ecs-worker", since + 60)
    assert not workers.heartbeat_after(worker, "other", since)
    assert not workers.heartbeat_after({"name": "devstack-ecs-worker"}, "devstack-ecs-worker", since)


def test_worker_env_adds_stack_and_venv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/usr/bin")

    env = workers.worker_env({"PREFECT_API_URL": "http://127.0.0.1:4200/api"})

    assert env["PREFECT_API_URL"] == "http://127.0.0.1:4200/api"
    assert env["PATH"].endswith(":/usr/bin")
