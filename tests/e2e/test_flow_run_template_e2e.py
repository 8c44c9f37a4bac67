"""A flow run completes on the local stack from the pool template bootstrap now builds.

The template carries the runtime platform, container secrets (empty here), the awslogs
configuration of the created log group and the task role. The run uses an isolated project
copy, so no other session's deployments or pools take part.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.e2e.bootstrap_support import bootstrap, session_env, teardown
from tests.e2e.conftest import PROJECT_ROOT, pool_has_worker, run_command, wait_for
from tests.e2e.helpers import create_flow_run, read_deployment, runner_record, wait_for_final_state

RUN_TIMEOUT = 300


@pytest.fixture(scope="module")
def run_env(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    env = session_env("run")
    created = bootstrap(env)
    assert created.returncode == 0, created.stdout + created.stderr
    deployed = run_command([sys.executable, "-m", "meta_flows.deploy", "hello"], env, timeout=900)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    log_path = tmp_path_factory.mktemp("run-worker") / "ecs.log"
    with open(log_path, "w") as log:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prefect",
                "worker",
                "start",
                "--pool",
                env["META_FLOWS_WORK_POOL"],
                "--type",
                "ecs",
                "--no-create-pool-if-not-found",
                "--install-policy",
                "never",
            ],
            env=env,
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(
                lambda: pool_has_worker(env["PREFECT_API_URL"], env["META_FLOWS_WORK_POOL"]),
                90,
                f"ECS worker did not come online; see {log_path}",
            )
            yield {**env, "WORKER_LOG": str(log_path)}
        finally:
            worker.terminate()
            worker.wait(timeout=30)
            teardown(env)


def test_flow_run_completes_with_new_template(run_env: dict[str, str]) -> None:
    suffix = run_env["META_FLOWS_CLUSTER"].removeprefix("p3-")
    deployment = read_deployment(run_env, f"hello/hello-{suffix}")

    flow_run_id = create_flow_run(run_env, deployment["id"], {"name": "template"})
    flow_run = wait_for_final_state(run_env, flow_run_id, RUN_TIMEOUT)

    assert flow_run["state_type"] == "COMPLETED", f"ended {flow_run['state_name']}; see {run_env['WORKER_LOG']}"
    record = wait_for(lambda: runner_record(run_env, flow_run_id), 30, "task runner record of the flow run")
    assert record["exit_code"] == 0
