"""Faults on the local stack: AWS throttling and 5xx, a push cut off, unreachable services, a
bootstrap killed halfway, and two deploys of one flow at once.

Faults come from devstack.fault_proxy, placed between the product and the emulator
(AWS_ENDPOINT_URL) or the registry (META_FLOWS_REGISTRY_HOST; the Docker engine pushes to the
proxy's 127.0.0.1 address, which it treats as an insecure registry). The product's code is
not patched.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from devstack.fault_proxy import Fault, FaultProxy, Request, aws_json_error, aws_query_error, cut_body, hold
from tests.e2e.conftest import PROJECT_ROOT, run_command
from tests.e2e.helpers import wait_for_final_state, wait_for_flow_run_logs
from tests.e2e.reliability_support import api_post, bootstrap, copy_project, deploy, flow_files, session_env
from tests.support.snapshot import describe_difference, take_snapshot

AWS_PROXY_PORT = 5041
REGISTRY_PROXY_PORT = 5042
UNUSED_PORT = 5049
DEPLOY_TIMEOUT = 900
RETRY_LINE = r"{action} failed with {reason}; retrying in \d+\.\d\d s \(attempt {attempt}/5\)"
CONTENTION = "Too many concurrent attempts to create a new revision of the specified family."


def action(name: str) -> Any:
    return lambda request: request.aws_action == name


@pytest.fixture(scope="module")
def aws_proxy(stack_env: dict[str, str]) -> Iterator[FaultProxy]:
    upstream = stack_env["AWS_ENDPOINT_URL"].removeprefix("http://")
    with FaultProxy(AWS_PROXY_PORT, upstream) as proxy:
        yield proxy


@pytest.fixture
def faults(aws_proxy: FaultProxy) -> Iterator[FaultProxy]:
    aws_proxy.clear_rules()
    aws_proxy.requests.clear()
    aws_proxy.request_held.clear()
    yield aws_proxy
    aws_proxy.clear_rules()


@pytest.fixture(scope="module")
def session(stack_env: dict[str, str], aws_proxy: FaultProxy) -> dict[str, Any]:
    """A session bootstrapped through the AWS proxy while it throttles and fails calls once or twice."""
    env, suffix = session_env(stack_env, "flt")
    aws_proxy.clear_rules()
    aws_proxy.add_rule(action("GetCallerIdentity"), aws_query_error("Throttling", "Rate exceeded"))
    aws_proxy.add_rule(action("DescribeClusters"), aws_json_error("ThrottlingException", "Rate exceeded"), times=2)
    aws_proxy.add_rule(action("CreateCluster"), aws_json_error("ClientException", CONTENTION))
    aws_proxy.add_rule(action("CreateRepository"), aws_json_error("ServerException", "internal error", 500))
    result = run_command(
        [sys.executable, "-m", "meta_flows.bootstrap"], {**env, "AWS_ENDPOINT_URL": f"http://{aws_proxy.address}"}
    )
    aws_proxy.clear_rules()
    return {"env": env, "suffix": suffix, "bootstrap": result}


def test_bootstrap_transient_aws_faults_retried(session: dict[str, Any]) -> None:
    result = session["bootstrap"]
    output = result.stdout + result.stderr

    assert result.returncode == 0, output
    expected = [
        ("sts:GetCallerIdentity", "Throttling", 2),
        ("ecs:DescribeClusters", "ThrottlingException", 2),
        ("ecs:DescribeClusters", "ThrottlingException", 3),
        ("ecs:CreateCluster", re.escape("ClientException (concurrent revisions of one task definition family)"), 2),
        ("ecr:CreateRepository", "HTTP 500 ServerException", 2),
    ]
    for name, reason, attempt in expected:
        assert re.search(RETRY_LINE.format(action=name, reason=reason, attempt=attempt), output), output
    assert re.search(rf"ECS cluster\s+{session['env']['META_FLOWS_CLUSTER']}\s+created", result.stdout)


def test_bootstrap_persistent_throttling_fails_clearly(stack_env: dict[str, str], faults: FaultProxy) -> None:
    env, suffix = session_env(stack_env, "thr")
    faults.add_rule(action("CreateCluster"), aws_json_error("ThrottlingException", "Rate exceeded"), times=None)
    before = take_snapshot(env, suffix)

    result = run_command(
        [sys.executable, "-m", "meta_flows.bootstrap"], {**env, "AWS_ENDPOINT_URL": f"http://{faults.address}"}
    )

    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    for attempt in (2, 3, 4, 5):
        assert re.search(
            RETRY_LINE.format(action="ecs:CreateCluster", reason="ThrottlingException", attempt=attempt), output
        )
    assert "ecs:CreateCluster failed with ThrottlingException on attempt 5/5: giving up" in output
    assert (
        "error: ecs:CreateCluster failed with ThrottlingException: Rate exceeded (still failing after 5 attempts"
        in output
    )
    assert sum(1 for r in faults.requests if r.aws_action == "CreateCluster") == 5
    after = take_snapshot(env, suffix)
    assert after == before, describe_difference(before, after)


def test_unreachable_services_named(session: dict[str, Any]) -> None:
    env = session["env"]
    before = take_snapshot(env, session["suffix"])

    no_docker = run_command(
        [sys.executable, "-m", "meta_flows.deploy", "hello"], {**env, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    )
    no_prefect = run_command(
        [sys.executable, "-m", "meta_flows.bootstrap"],
        {**env, "PREFECT_API_URL": f"http://127.0.0.1:{UNUSED_PORT}/api"},
    )

    assert no_docker.returncode == 1
    assert "Docker engine not reachable at unix:///nonexistent/docker.sock" in no_docker.stderr
    assert "set DOCKER_HOST to the engine's socket" in no_docker.stderr
    assert no_prefect.returncode == 1
    assert f"Prefect API not reachable at PREFECT_API_URL=http://127.0.0.1:{UNUSED_PORT}/api" in no_prefect.stderr
    assert "start the server or set PREFECT_API_URL" in no_prefect.stderr
    after = take_snapshot(env, session["suffix"])
    assert after == before, describe_difference(before, after)


def test_deploy_family_contention_retried(session: dict[str, Any], faults: FaultProxy) -> None:
    env = session["env"]
    faults.add_rule(action("RegisterTaskDefinition"), aws_json_error("ClientException", CONTENTION))

    result = run_command(
        [sys.executable, "-m", "meta_flows.deploy", "hello"], {**env, "AWS_ENDPOINT_URL": f"http://{faults.address}"}
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    reason = re.escape("ClientException (concurrent revisions of one task definition family)")
    assert re.search(RETRY_LINE.format(action="ecs:RegisterTaskDefinition", reason=reason, attempt=2), output), output
    assert sum(1 for r in faults.requests if r.aws_action == "RegisterTaskDefinition") == 2


def test_bootstrap_killed_halfway_rerun_completes(stack_env: dict[str, str], faults: FaultProxy) -> None:
    env, suffix = session_env(stack_env, "kil")
    faults.add_rule(action("CreateRepository"), hold())
    process = subprocess.Popen(
        [sys.executable, "-m", "meta_flows.bootstrap"],
        env={**env, "AWS_ENDPOINT_URL": f"http://{faults.address}"},
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert faults.request_held.wait(120), "bootstrap never reached ecr:CreateRepository"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    faults.clear_rules()
    halfway = take_snapshot(env, suffix)

    rerun = bootstrap(env)

    assert halfway["aws"]["clusters"], "the killed run created the cluster before it stopped"
    assert halfway["prefect"]["pools"] == {}
    assert re.search(rf"ECS cluster\s+{env['META_FLOWS_CLUSTER']}\s+unchanged", rerun)
    assert re.search(rf"work pool \(ecs\)\s+{env['META_FLOWS_WORK_POOL']}\s+created", rerun)
    final = take_snapshot(env, suffix)
    prefix = env["META_FLOWS_REPOSITORY_PREFIX"]
    assert final["aws"]["clusters"] == halfway["aws"]["clusters"]
    assert len(final["aws"]["clusters"]) == 1
    cluster = env["META_FLOWS_CLUSTER"]
    assert final["aws"]["roles"] == sorted(f"{cluster}-{role}" for role in ("execution", "task", "worker"))
    assert final["aws"]["repositories"] == [f"{prefix}/hello", f"{prefix}/report"]
    assert sorted(final["prefect"]["pools"]) == sorted([env["META_FLOWS_WORK_POOL"], env["META_FLOWS_DEPLOYER_POOL"]])
    assert [name for name, *_ in final["prefect"]["blocks"]] == sorted(
        [env["META_FLOWS_CREDENTIALS_BLOCK"], env["META_FLOWS_TASK_SETTINGS_BLOCK"]]
    )
    assert [q[:2] for q in final["prefect"]["queues"] if q[0] == env["META_FLOWS_WORK_POOL"]] == [
        (env["META_FLOWS_WORK_POOL"], "default")
    ]


def is_manifest_put(request: Request) -> bool:
    return request.method == "PUT" and "/manifests/" in request.path


def is_blob_upload(request: Request) -> bool:
    return request.method in ("PATCH", "PUT") and "/blobs/uploads/" in request.path


def project_through_registry_proxy(env: dict[str, str], tmp_path: Path, flow: str, proxy: FaultProxy) -> dict[str, str]:
    """Write a project with one flow and return the environment that pushes it through `proxy`."""
    root = copy_project(
        tmp_path / "project", {flow: flow_files(flow)}, [{"name": flow, "entrypoint": f"flows/{flow}/flow.py:main"}]
    )
    return {**env, "META_FLOWS_REGISTRY_HOST": proxy.address, "META_FLOWS_PROJECT_ROOT": str(root)}


def test_push_cut_halfway_rerun_reuses_layers(session: dict[str, Any], tmp_path: Path) -> None:
    env = session["env"]
    with FaultProxy(REGISTRY_PROXY_PORT, env["REGISTRY_UPSTREAM"]) as proxy:
        through_proxy = project_through_registry_proxy(env, tmp_path, "pushcut", proxy)
        # The engine retries a cut layer upload itself; the manifest upload it does not retry.
        proxy.add_rule(is_blob_upload, cut_body())
        proxy.add_rule(is_manifest_put, cut_body(), times=None)

        first_code, first = deploy(through_proxy, "pushcut", DEPLOY_TIMEOUT)
        proxy.clear_rules()
        second_code, second = deploy(through_proxy, "pushcut", DEPLOY_TIMEOUT)

    assert first_code == 1, first
    assert re.search(r"error: push of 127\.0\.0\.1:5042/\S+/pushcut:[0-9a-f]{16} failed", first), first
    assert "deployment:" not in first
    assert second_code == 0, second
    assert "outcome:    built and pushed" in second
    assert re.search(r"Pushed \S+ \(0 layers new, [1-9]\d* reused", second), second


def is_manifest_read(request: Request) -> bool:
    return request.method == "GET" and "/manifests/" in request.path


def test_registry_5xx_retried_then_deploys(session: dict[str, Any], tmp_path: Path) -> None:
    env = session["env"]
    with FaultProxy(REGISTRY_PROXY_PORT, env["REGISTRY_UPSTREAM"]) as proxy:
        through_proxy = project_through_registry_proxy(env, tmp_path, "regretry", proxy)
        proxy.add_rule(is_manifest_read, Fault("answer", 503, {"Content-Type": "text/plain"}, b"busy"), times=2)
        code, output = deploy(through_proxy, "regretry", DEPLOY_TIMEOUT)
        # Only the look-up before the build counts: the push and the keep- tag read manifests too.
        first_push = next(i for i, r in enumerate(proxy.requests) if r.method in ("POST", "PUT"))
        reads = [r for r in proxy.requests[:first_push] if is_manifest_read(r)]

    assert code == 0, output
    assert re.search(r"registry GET /v2/\S+/regretry/manifests/[0-9a-f]{16} failed with HTTP 503; retrying", output)
    assert "(attempt 3/5)" in output
    assert "outcome:    built and pushed" in output
    assert len(reads) >= 3


LOCK_LINE = re.compile(r"(Acquired|Releasing) deploy lock (\S+)")


def lock_times(env: dict[str, str], flow_run_id: str) -> dict[str, datetime]:
    # The run's final state can reach the server before its last log lines do.
    logs = wait_for_flow_run_logs(env, flow_run_id, ["Acquired deploy lock", "Releasing deploy lock"], 120)
    times = {}
    for log in logs:
        match = LOCK_LINE.search(log["message"])
        if match:
            times[match.group(1)] = datetime.fromisoformat(log["timestamp"])
    return times


def test_concurrent_deploys_of_one_flow_serialised(session: dict[str, Any], tmp_path: Path) -> None:
    env = session["env"]
    root = copy_project(
        tmp_path / "project",
        {"lockdemo": flow_files("lockdemo")},
        [{"name": "lockdemo", "entrypoint": "flows/lockdemo/flow.py:main"}],
    )
    worker_env = {**env, "META_FLOWS_PROJECT_ROOT": str(root)}
    api = env["PREFECT_API_URL"]
    deployment_id = create_deploy_flow_deployment(env, session["suffix"])
    log = open(tmp_path / "deployer-worker.log", "w")  # noqa: SIM115 - closed below
    worker = subprocess.Popen(
        [
            *(sys.executable, "-m", "prefect", "worker", "start", "--pool", env["META_FLOWS_DEPLOYER_POOL"]),
            *("--type", "process", "--no-create-pool-if-not-found", "--install-policy", "never"),
        ],
        env=worker_env,
        cwd=PROJECT_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        runs = [
            api_post(env, f"/deployments/{deployment_id}/create_flow_run", {"parameters": {"flow": "lockdemo"}})["id"]
            for _ in range(2)
        ]
        finals = [wait_for_final_state(env, run, DEPLOY_TIMEOUT) for run in runs]
        # Read the lock lines while the worker, and so the runs' processes, still live.
        completed = all(f["state_type"] == "COMPLETED" for f in finals)
        times = [lock_times(env, run) for run in runs] if completed else []
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        log.close()

    assert [f["state_type"] for f in finals] == ["COMPLETED", "COMPLETED"], (
        tmp_path / "deployer-worker.log"
    ).read_text()
    first, second = sorted(times, key=lambda t: t["Acquired"])
    assert first["Releasing"] <= second["Acquired"]
    repository = f"{env['META_FLOWS_REPOSITORY_PREFIX']}/lockdemo"
    tags = requests.get(
        f"http://{env['REGISTRY_UPSTREAM']}/v2/{repository}/tags/list", auth=registry_auth(env), timeout=10
    ).json()["tags"]
    deployment = requests.get(f"{api}/deployments/name/lockdemo/lockdemo", timeout=10).json()
    # The deployment history tags each image it keeps as keep-<owner>-<tag>, which is not a second build.
    built = [tag for tag in tags if not tag.startswith("keep-")]
    assert len(built) == 1
    assert len(tags) == 2
    assert re.fullmatch(rf"keep-[0-9a-f]{{8}}-{built[0]}", max(tags, key=lambda tag: tag.startswith("keep-")))
    assert deployment["job_variables"]["image"].endswith(f"/{repository}:{built[0]}")
    assert deployment["work_pool_name"] == env["META_FLOWS_WORK_POOL"]


def registry_auth(env: dict[str, str]) -> tuple[str, str]:
    from tests.support.snapshot import registry_login

    return registry_login(env)


def create_deploy_flow_deployment(env: dict[str, str], suffix: str) -> str:
    """Create a deploy-flow deployment of this session on its deployer pool; return its id.

    bootstrap's deploy-flow/default has one name on the whole server, so sessions sharing the
    server would redirect each other's runs; this one has a name of its own.
    """
    flow_id = api_post(env, "/flows/", {"name": "deploy-flow"})["id"]
    deployment = api_post(
        env,
        "/deployments/",
        {
            "name": f"lock-{suffix}",
            "flow_id": flow_id,
            "entrypoint": "meta_flows/deploy.py:deploy_flow",
            "work_pool_name": env["META_FLOWS_DEPLOYER_POOL"],
            "pull_steps": [{"prefect.deployments.steps.set_working_directory": {"directory": str(PROJECT_ROOT)}}],
            "enforce_parameter_schema": False,
        },
    )
    return str(deployment["id"])


def test_ecr_repository_has_no_duplicates(session: dict[str, Any]) -> None:
    env = session["env"]
    ecr = boto3.client("ecr", region_name=env["AWS_REGION"], endpoint_url=env["AWS_ENDPOINT_URL"])
    names = [r["repositoryName"] for r in ecr.describe_repositories()["repositories"]]

    assert len(names) == len(set(names))
