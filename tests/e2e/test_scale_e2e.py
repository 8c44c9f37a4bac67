"""End to end at scale: free unchanged redeploys, thin code changes, no task definition churn,
no registration throttling, deploy-all-flows, and the benchmark's counts.

The tests use their own generated project, pools, cluster and repositories (session-unique
names), so no other test's worker picks up their flow runs. They run in file order.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.e2e.conftest import PROJECT_ROOT, run_command, wait_for
from tests.e2e.helpers import api_get, api_request, create_flow_run, read_deployment, registry_tags

DEPLOY_TIMEOUT = 900
PROXY_PORT = 5051
PROXY_URL = f"http://127.0.0.1:{PROXY_PORT}"
BURST_SIZE = 10
RESTARTED_RUNS = 10

FLOW_FILE = """from prefect import flow


@flow(name="{name}")
def main(greeting: str = "hello") -> str:
    return greeting
"""


def output_of(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def scale(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A generated project with flows `a` and `b`, bootstrapped on pools of its own."""
    suffix = uuid.uuid4().hex[:6]
    root = tmp_path_factory.mktemp("scale-project")
    names = {folder: f"scale-{suffix}-{folder}" for folder in ("a", "b")}
    entries = []
    for folder, name in names.items():
        (root / "flows" / folder).mkdir(parents=True)
        (root / "flows" / folder / "flow.py").write_text(FLOW_FILE.format(name=name))
        (root / "flows" / folder / "requirements.txt").write_text("")
        entries.append({"name": "default", "entrypoint": f"flows/{folder}/flow.py:main", "tags": ["scale"]})
    (root / "prefect.yaml").write_text(json.dumps({"deployments": entries}))

    env = dict(stack_env)
    env.update(
        {
            "META_FLOWS_PROJECT_ROOT": str(root),
            "META_FLOWS_WORK_POOL": f"e2e-scale-{suffix}",
            "META_FLOWS_DEPLOYER_POOL": f"e2e-scale-{suffix}-deployer",
            "META_FLOWS_CLUSTER": f"e2e-scale-{suffix}",
            "META_FLOWS_REPOSITORY_PREFIX": f"e2e-scale-{suffix}",
            "META_FLOWS_CREDENTIALS_BLOCK": f"e2e-scale-{suffix}-aws",
            "META_FLOWS_TASK_SETTINGS_BLOCK": f"e2e-scale-{suffix}-ecs",
        }
    )
    bootstrap = run_command([sys.executable, "-m", "meta_flows.bootstrap"], env)
    assert bootstrap.returncode == 0, output_of(bootstrap)
    runner = run_command([sys.executable, "-m", "devstack", "runner"], env, timeout=120)
    assert runner.returncode == 0, output_of(runner)
    return {"env": env, "root": root, "names": names, "prefix": env["META_FLOWS_REPOSITORY_PREFIX"]}


def ecs_client(env: dict[str, str], endpoint: str | None = None) -> Any:
    config = Config(retries={"max_attempts": 1})
    return boto3.client(
        "ecs", region_name=env["AWS_REGION"], endpoint_url=endpoint or env["AWS_ENDPOINT_URL"], config=config
    )


def revisions(env: dict[str, str], family: str) -> int:
    """Return the number of ACTIVE revisions in exactly this task definition family."""
    arns = ecs_client(env).list_task_definitions(familyPrefix=family, status="ACTIVE")["taskDefinitionArns"]
    return sum(arn.rpartition("/")[2].rpartition(":")[0] == family for arn in arns)


def content_tags(env: dict[str, str], repository: str) -> list[str]:
    """Return the image tags, leaving out the `keep-` tags the deployment history adds."""
    return [tag for tag in registry_tags(env, repository) if not tag.startswith("keep-")]


def deployment_of(scale: dict[str, Any], folder: str) -> dict[str, Any]:
    return read_deployment(scale["env"], f"{scale['names'][folder]}/default")


def deploy_all(scale: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "meta_flows.deploy_all", "--concurrency", "3", *args]
    return run_command(command, scale["env"], timeout=DEPLOY_TIMEOUT)


def latest_summary_artifact(env: dict[str, str], marker: str) -> str:
    """Return the newest deploy-all-flows summary that mentions `marker`."""
    reply = requests.post(
        f"{env['PREFECT_API_URL']}/artifacts/filter",
        json={"artifacts": {"key": {"any_": ["deploy-all-flows"]}}, "sort": "CREATED_DESC", "limit": 50},
        timeout=10,
    )
    reply.raise_for_status()
    return next(str(a["data"]) for a in reply.json() if marker in str(a["data"]))


def test_deploy_all_deploys_others_when_one_fails(scale: dict[str, Any]) -> None:
    # A folder with no prefect.yaml entry fails in deploy-all-flows, after bootstrap.
    broken = scale["root"] / "flows" / "broken"
    broken.mkdir()
    (broken / "flow.py").write_text(FLOW_FILE.format(name="never-deployed"))

    result = deploy_all(scale)

    assert result.returncode == 1, output_of(result)
    assert re.search(
        r"^broken\s+failed\s+prefect.yaml has no deployment whose entrypoint is in flows/broken/", result.stdout, re.M
    )
    assert re.search(r"^a\s+deployed\s+pushed .*, deployment scale-\w+-a/default created$", result.stdout, re.M)
    assert re.search(r"^b\s+deployed\s+pushed .*, deployment scale-\w+-b/default created$", result.stdout, re.M)
    assert "2 deployed, 1 failed" in result.stdout
    summary = latest_summary_artifact(scale["env"], scale["names"]["a"])
    assert "| broken | failed |" in summary
    assert "2 deployed, 1 failed." in summary
    broken_row = next(line for line in summary.splitlines() if line.startswith("| broken |"))
    assert "prefect.yaml has no deployment whose entrypoint is in flows/broken/" in broken_row
    (broken / "flow.py").unlink()
    broken.rmdir()


def test_deploy_all_missing_pool_stops_early(scale: dict[str, Any]) -> None:
    pool = f"{scale['env']['META_FLOWS_WORK_POOL']}-missing"
    command = [sys.executable, "-m", "meta_flows.deploy_all", "a", "b"]

    result = run_command(command, {**scale["env"], "META_FLOWS_WORK_POOL": pool}, timeout=DEPLOY_TIMEOUT)

    assert result.returncode == 1, output_of(result)
    assert f"error: work pool '{pool}' not found: run `python -m meta_flows.bootstrap` first" in result.stderr
    assert "Image of a:" not in output_of(result)
    assert "Waiting for deploy locks" not in output_of(result)


def test_deployment_carries_shared_task_definition_family(scale: dict[str, Any]) -> None:
    deployment = deployment_of(scale, "a")
    family = deployment["job_variables"]["family"]

    assert family.startswith(f"prefect_{scale['env']['META_FLOWS_WORK_POOL']}_")
    assert revisions(scale["env"], family) == 1
    definition = ecs_client(scale["env"]).describe_task_definition(taskDefinition=family)["taskDefinition"]
    assert definition["containerDefinitions"][0]["image"] == deployment["job_variables"]["image"]


def test_unchanged_redeploy_builds_pushes_registers_nothing(scale: dict[str, Any]) -> None:
    env, prefix = scale["env"], scale["prefix"]
    before = {folder: deployment_of(scale, folder) for folder in ("a", "b")}
    tags_before = {folder: registry_tags(env, f"{prefix}/{folder}") for folder in ("a", "b")}

    many = deploy_all(scale, "a", "b")
    one = run_command([sys.executable, "-m", "meta_flows.deploy", "a"], env, timeout=DEPLOY_TIMEOUT)

    assert many.returncode == 0, output_of(many)
    assert re.search(r"^a\s+deployed\s+image unchanged, deployment \S+ unchanged$", many.stdout, re.M)
    assert re.search(r"^b\s+deployed\s+image unchanged, deployment \S+ unchanged$", many.stdout, re.M)
    assert one.returncode == 0, output_of(one)
    assert "outcome:    already in the registry: not built, not pushed" in one.stdout
    assert re.search(r"^deployment: \S+ \(unchanged\)$", one.stdout, re.M)
    for folder in ("a", "b"):
        after = deployment_of(scale, folder)
        assert after["updated"] == before[folder]["updated"]
        assert registry_tags(env, f"{prefix}/{folder}") == tags_before[folder]
        assert revisions(env, after["job_variables"]["family"]) == 1


def hold_deploy_lock(env: dict[str, str], name: str) -> str:
    """Take the one slot of the deploy lock `name` through the Prefect API; return the lease id."""
    try:
        api_request(env, "POST", "/v2/concurrency_limits/", {"name": name, "limit": 1})
    except requests.HTTPError as exc:
        # 409 means the limit exists already, which serves as well.
        assert exc.response is not None and exc.response.status_code == 409, exc
    body = {"names": [name], "slots": 1, "mode": "concurrency", "lease_duration": 300}
    return str(api_request(env, "POST", "/v2/concurrency_limits/increment-with-lease", body)["lease_id"])


def test_deploy_all_takes_every_lock_at_once(scale: dict[str, Any], tmp_path: Path) -> None:
    env = scale["env"]
    lease_id = hold_deploy_lock(env, f"deploy-flow-{scale['prefix']}--b")
    log_path = tmp_path / "deploy-all.log"
    command = [sys.executable, "-m", "meta_flows.deploy_all", "--concurrency", "3", "a", "b"]
    with log_path.open("w") as log:
        process = subprocess.Popen(command, env=env, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "Waiting for deploy locks" in log_path.read_text(), 120, "deploy-all waiting for its locks")
        # With b's lock held by someone else, a must not start either: the locks are all or none.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert "Acquired deploy locks" not in log_path.read_text()
            assert "Image of a:" not in log_path.read_text()
            time.sleep(0.2)
        assert process.poll() is None, log_path.read_text()
    except BaseException:
        process.kill()
        process.wait(timeout=60)
        raise
    finally:
        api_request(env, "POST", "/v2/concurrency_limits/decrement-with-lease", {"lease_id": lease_id})
    assert process.wait(timeout=DEPLOY_TIMEOUT) == 0, log_path.read_text()
    output = log_path.read_text()
    prefix = scale["prefix"]
    assert f"Acquired deploy locks deploy-flow-{prefix}--a, deploy-flow-{prefix}--b" in output
    assert "2 deployed, 0 failed" in output


def test_code_only_change_pushes_one_thin_layer(scale: dict[str, Any]) -> None:
    env = scale["env"]
    flow_file = scale["root"] / "flows" / "a" / "flow.py"
    flow_file.write_text(flow_file.read_text() + "\n# a code-only change\n")
    tags_before = content_tags(env, f"{scale['prefix']}/a")

    result = run_command([sys.executable, "-m", "meta_flows.deploy", "a"], env, timeout=DEPLOY_TIMEOUT)

    assert result.returncode == 0, output_of(result)
    pushed = re.search(r"^pushed:\s+(\d+) layers, ([\d.]+) (B|KiB|MiB)", result.stdout, re.M)
    assert pushed, result.stdout
    assert pushed.group(1) == "1"
    assert pushed.group(3) in ("B", "KiB")
    assert len(content_tags(env, f"{scale['prefix']}/a")) == len(tags_before) + 1


def start_worker_once(env: dict[str, str], pool: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "ecs"]
    return run_command([*command, "--run-once", "--install-policy", "never"], env, timeout=300)


def test_ten_runs_with_worker_restarts_leave_one_revision(scale: dict[str, Any]) -> None:
    env = scale["env"]
    deployment = deployment_of(scale, "a")
    family = deployment["job_variables"]["family"]

    for _ in range(RESTARTED_RUNS):
        flow_run_id = create_flow_run(env, deployment["id"], {})
        worker = start_worker_once(env, env["META_FLOWS_WORK_POOL"])
        assert worker.returncode == 0, output_of(worker)
        flow_run = api_get(env, f"/flow_runs/{flow_run_id}")
        assert flow_run["infrastructure_pid"], f"the worker did not submit {flow_run_id}: {output_of(worker)}"

    assert revisions(env, family) == 1


@pytest.fixture
def fault_proxy(tmp_path: Path, stack_env: dict[str, str]) -> Iterator[str]:
    """The fault proxy on port 5051, in front of the stack's emulator, at ECS's 1/s rate."""
    log = (tmp_path / "fault-proxy.log").open("w")
    command = [sys.executable, "-m", "devstack.fault_proxy", "--port", str(PROXY_PORT)]
    command += ["--upstream", stack_env["AWS_ENDPOINT_URL"], "--rate", "1", "--burst", "1"]
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT)

    def ready() -> bool:
        try:
            return requests.get(f"{PROXY_URL}/_fault_proxy/stats", timeout=1).status_code == 200
        except requests.RequestException:
            return process.poll() is not None

    wait_for(ready, 30, f"fault proxy on {PROXY_URL}; see {log.name}")
    assert process.poll() is None, f"fault proxy exited; see {log.name}"
    yield PROXY_URL
    process.terminate()
    process.wait(timeout=30)
    log.close()


def proxy_stats() -> dict[str, int]:
    return requests.get(f"{PROXY_URL}/_fault_proxy/stats", timeout=10).json()  # type: ignore[no-any-return]


def clone_deployment(env: dict[str, str], source: dict[str, Any], name: str) -> str:
    """Create a deployment with the same flow, image and settings as `source`."""
    fields = ["flow_id", "entrypoint", "work_pool_name", "work_queue_name", "job_variables", "pull_steps"]
    body = {field: source[field] for field in fields} | {"name": name, "parameter_openapi_schema": {}}

    return str(api_request(env, "POST", "/deployments/", body)["id"])


def test_ten_deployments_started_together_not_throttled(scale: dict[str, Any], fault_proxy: str) -> None:
    env = scale["env"]
    source = deployment_of(scale, "b")
    family = source["job_variables"]["family"]
    deployment_ids = [clone_deployment(env, source, f"burst-{i}") for i in range(BURST_SIZE)]

    worker_env = env | {"AWS_ENDPOINT_URL": fault_proxy}
    command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", env["META_FLOWS_WORK_POOL"]]
    command += ["--type", "ecs", "--install-policy", "never", "--limit", str(BURST_SIZE)]
    # All ten are scheduled before the worker starts, so its first poll submits them together.
    flow_run_ids = [create_flow_run(env, d, {}) for d in deployment_ids]
    worker = subprocess.Popen(
        command, env=worker_env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:

        def all_submitted() -> bool:
            runs = [api_get(env, f"/flow_runs/{i}") for i in flow_run_ids]
            return all(r["infrastructure_pid"] or r["state_type"] in ("CRASHED", "FAILED") for r in runs)

        wait_for(all_submitted, 300, "the ECS worker submitting the ten flow runs", interval=2)
    finally:
        worker.terminate()
        worker_output = worker.communicate(timeout=60)[0].decode(errors="replace")

    runs = [api_get(env, f"/flow_runs/{i}") for i in flow_run_ids]
    assert all(r["infrastructure_pid"] for r in runs), worker_output[-3000:]
    assert proxy_stats() == {"register_forwarded": 0, "register_throttled": 0}
    assert "Too many concurrent attempts" not in worker_output
    assert revisions(env, family) == 1


def test_fault_proxy_throttles_concurrent_registrations(scale: dict[str, Any], fault_proxy: str) -> None:
    """The control: without a shared, pre-registered family, a burst is throttled."""
    ecs = ecs_client(scale["env"], fault_proxy)
    family = f"e2e-proxy-control-{uuid.uuid4().hex[:6]}"
    definition = {"family": family, "containerDefinitions": [{"name": "c", "image": "busybox", "memory": 64}]}

    def register(_: int) -> str:
        try:
            ecs.register_task_definition(**definition)
        except ClientError as exc:
            return str(exc.response["Error"]["Message"])
        return "registered"

    with ThreadPoolExecutor(BURST_SIZE) as pool:
        outcomes = list(pool.map(register, range(BURST_SIZE)))

    throttled = [
        o for o in outcomes if o == "Too many concurrent attempts to create a new revision of the specified family."
    ]
    assert len(throttled) >= 1, outcomes
    assert proxy_stats()["register_throttled"] == len(throttled)


def test_benchmark_one_run_counts(stack_env: dict[str, str], tmp_path: Path) -> None:
    """One run of the benchmark on the stack's server: the counts, never the times."""
    out = tmp_path / "bench.json"
    command = [sys.executable, "-m", "bench.run", "--runs", "1", "--flows", "2", "--revision-runs", "2"]
    result = run_command([*command, "--prefect-api", stack_env["PREFECT_API_URL"], "--json", str(out)], stack_env, 1500)

    assert result.returncode == 0, output_of(result)[-4000:]
    report = json.loads(out.read_text())
    steps = report["steps"]
    # (images pushed, tags created); a new version of ours also gets the history's keep- tag.
    for step, (manifests, tags) in {
        "ours:one-cold": (1, 2),
        "ours:one-unchanged": (0, 0),
        "ours:one-code-change": (1, 2),
        "ours:many-cold": (2, 4),
        "ours:many-unchanged": (0, 0),
        "standard:one-unchanged": (1, 1),
        "standard:many-unchanged": (2, 2),
    }.items():
        assert steps[step]["manifests_pushed"] == manifests, step
        assert steps[step]["tags_created"] == tags, step
    assert steps["ours:one-code-change"]["blobs_pushed"] <= 2  # the code layer and the image config
    assert report["revisions"] == {"ours": 1, "standard": 2}
