"""Planted canaries never come out: bootstrap, a deploy and a flow run at DEBUG, then a scan of
every place a secret could leak to.

Canaries: the AWS secret key (PREFECT_AWS_SECRET_ACCESS_KEY; the emulator accepts any key),
the Prefect API key (PREFECT_API_KEY; the local server ignores it), a secret the flow gets
through a Secrets Manager ARN in its `secrets` job variable, and the registry password. The
emulator's ECR password is fixed (123456789012-auth-token), so that fixed value is the canary.

Scanned: the product's command output, the workers' and the task runner's logs, every Prefect
log, artifact, deployment and flow run of the server, the image (`docker save` output and its
history), every Docker API request the product sends (build context, build args, commands,
headers), every request to the emulator (RunTask overrides, task definitions), the task
definition as ECS stores it, and the command line of every process, sampled during the runs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import docker
import pytest
import requests

from devstack.fault_proxy import FaultProxy
from tests.e2e.conftest import PROJECT_ROOT, WORKER_START_SECONDS, pool_has_worker, run_command, wait_for
from tests.e2e.helpers import (
    create_flow_run,
    flow_run_logs,
    read_deployment,
    wait_for_final_state,
    wait_for_flow_run_logs,
)
from tests.e2e.reliability_support import copy_project, session_env
from tests.support.docker_recorder import DockerRecorder

AWS_PROXY_PORT = 5043
REGISTRY_PASSWORD = "123456789012-auth-token"
RUN_TIMEOUT = 300
DEPLOY_TIMEOUT = 900
# Command lines the sampler must have caught, to show it sampled while the product ran.
PRODUCT_COMMANDS = ("meta_flows.bootstrap", "meta_flows.deploy", "prefect worker start")

CANARY_FLOW = """import hashlib
import os

from prefect import flow, get_run_logger


def fingerprint(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:16]


@flow(name="canary")
def main() -> str:
    secret = fingerprint(os.environ.get("FLOW_SECRET", ""))
    api_key = fingerprint(os.environ.get("PREFECT_API_KEY", ""))
    get_run_logger().info("received flow secret %s and API key %s", secret, api_key)
    return secret
"""


def fingerprint(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:16]


def encodings(value: str) -> list[bytes]:
    raw = value.encode()
    return [raw, base64.b64encode(raw), base64.urlsafe_b64encode(raw)]


class CommandLineSampler:
    """Read every process's command line until stopped, keeping those that contain a canary."""

    def __init__(self, canaries: list[str]) -> None:
        self.canaries = [c.encode() for c in canaries]
        self.hits: list[str] = []
        self.seen: set[str] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for entry in Path("/proc").iterdir():
                try:
                    cmdline = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                text = cmdline.replace(b"\0", b" ").decode(errors="replace")
                if any(c in cmdline for c in self.canaries):
                    self.hits.append(text)
                for product in PRODUCT_COMMANDS:
                    if product in text:
                        self.seen.add(product)
            self.samples += 1

    def __enter__(self) -> CommandLineSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@pytest.fixture(scope="module")
def planted(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Plant the canaries, then bootstrap, deploy and run the canary flow through both recorders."""
    env, suffix = session_env(stack_env, "sec")
    token = uuid.uuid4().hex
    canaries = {
        "aws secret key": f"canary-aws-{token}",
        "prefect api key": f"canary-pnu-{token}",
        "flow secret": f"canary-flow-{token}",
    }
    secrets = boto3.client("secretsmanager", region_name=env["AWS_REGION"], endpoint_url=env["AWS_ENDPOINT_URL"])
    api_key_arn = secrets.create_secret(Name=f"rel-{suffix}-api-key", SecretString=canaries["prefect api key"])["ARN"]
    flow_secret_arn = secrets.create_secret(Name=f"rel-{suffix}-flow", SecretString=canaries["flow secret"])["ARN"]

    workdir = tmp_path_factory.mktemp("secrets")
    root = copy_project(
        workdir / "project",
        {"canary": {"flow.py": CANARY_FLOW, "requirements.txt": ""}},
        [
            {
                "name": "canary",
                "entrypoint": "flows/canary/flow.py:main",
                "work_pool": {"job_variables": {"secrets": [{"name": "FLOW_SECRET", "valueFrom": flow_secret_arn}]}},
            }
        ],
    )
    for package in ("meta_flows", "blocks"):
        (root / package).symlink_to(PROJECT_ROOT / package)

    started = datetime.now(UTC)
    engine_socket = stack_env["DOCKER_HOST"].removeprefix("unix://")
    with (
        FaultProxy(AWS_PROXY_PORT, env["AWS_ENDPOINT_URL"].removeprefix("http://")) as aws,
        DockerRecorder(workdir / "docker.sock", engine_socket) as recorder,
        CommandLineSampler([*canaries.values(), REGISTRY_PASSWORD]) as sampler,
    ):
        env.update(
            {
                "META_FLOWS_PROJECT_ROOT": str(root),
                "PREFECT_AWS_ACCESS_KEY_ID": f"AKIACANARY{token[:10].upper()}",
                "PREFECT_AWS_SECRET_ACCESS_KEY": canaries["aws secret key"],
                "PREFECT_API_KEY": canaries["prefect api key"],
                "META_FLOWS_PREFECT_API_KEY_SECRET_ARN": api_key_arn,
                "AWS_ENDPOINT_URL": f"http://{aws.address}",
                "DOCKER_HOST": recorder.docker_host,
                "PREFECT_LOGGING_LEVEL": "DEBUG",
            }
        )
        outputs = [run_command([sys.executable, "-m", "meta_flows.bootstrap"], env)]
        assert outputs[0].returncode == 0, outputs[0].stdout + outputs[0].stderr
        outputs.append(run_command([sys.executable, "-m", "meta_flows.deploy", "canary"], env, timeout=DEPLOY_TIMEOUT))
        assert outputs[1].returncode == 0, outputs[1].stdout + outputs[1].stderr

        worker_log = workdir / "ecs-worker.log"
        flow_run = run_canary_flow(env, worker_log)
        # The final state can reach the server before the run's last log batch: wait for the
        # engine's closing line, so the log scans below see every line the run wrote.
        try:
            run_logs = wait_for_flow_run_logs(env, flow_run["id"], ["received flow secret", "Finished in state"], 120)
        except AssertionError:
            # test_flow_received_secrets_by_arn reports what is missing; the scans still run.
            run_logs = flow_run_logs(env, flow_run["id"])
        yield {
            "env": env,
            "suffix": suffix,
            "canaries": canaries,
            "api_key_arn": api_key_arn,
            "flow_secret_arn": flow_secret_arn,
            "outputs": [o.stdout + o.stderr for o in outputs],
            "worker_log": worker_log.read_text(),
            "flow_run": flow_run,
            "run_logs": run_logs,
            "aws_requests": list(aws.requests),
            "recorder": recorder,
            "sampler": sampler,
            "started": started,
        }


def run_canary_flow(env: dict[str, str], worker_log: Path) -> dict[str, Any]:
    """Start the ECS worker on the session's pool, run the canary deployment once, stop the worker."""
    runner = run_command([sys.executable, "-m", "devstack", "runner"], env, timeout=120)
    assert runner.returncode == 0, runner.stdout + runner.stderr
    pool = env["META_FLOWS_WORK_POOL"]
    with open(worker_log, "w") as log:
        worker = subprocess.Popen(
            [
                *(sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "ecs"),
                *("--no-create-pool-if-not-found", "--install-policy", "never"),
            ],
            env=env,
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(lambda: pool_has_worker(env["PREFECT_API_URL"], pool), WORKER_START_SECONDS, "ECS worker online")
            deployment = read_deployment(env, "canary/canary")
            flow_run = wait_for_final_state(env, create_flow_run(env, deployment["id"], {}), RUN_TIMEOUT)
        finally:
            worker.terminate()
            worker.wait(timeout=60)
    return flow_run


def everything_from_server(env: dict[str, str], path: str, body: dict[str, Any]) -> list[Any]:
    items: list[Any] = []
    while True:
        reply = requests.post(
            f"{env['PREFECT_API_URL']}{path}", json={**body, "limit": 200, "offset": len(items)}, timeout=30
        )
        reply.raise_for_status()
        page = reply.json()
        items += page
        if len(page) < 200:
            return items


def leaks(canaries: dict[str, str], haystack: bytes) -> list[str]:
    return [name for name, value in canaries.items() if any(form in haystack for form in encodings(value))]


def all_canaries(planted: dict[str, Any]) -> dict[str, str]:
    return {**planted["canaries"], "registry password": REGISTRY_PASSWORD}


def test_flow_received_secrets_by_arn(planted: dict[str, Any]) -> None:
    flow_run = planted["flow_run"]
    messages = "\n".join(log["message"] for log in planted["run_logs"])

    assert flow_run["state_type"] == "COMPLETED", planted["worker_log"][-3000:]
    secret = fingerprint(planted["canaries"]["flow secret"])
    api_key = fingerprint(planted["canaries"]["prefect api key"])
    assert f"received flow secret {secret} and API key {api_key}" in messages


def test_task_definition_carries_arns_not_values(planted: dict[str, Any]) -> None:
    registered = [r for r in planted["aws_requests"] if r.aws_action == "RegisterTaskDefinition"]
    run_task = [r for r in planted["aws_requests"] if r.aws_action == "RunTask"]

    assert len(registered) == 1
    assert len(run_task) == 1
    container = json.loads(registered[0].body)["containerDefinitions"][0]
    assert sorted(container["secrets"], key=lambda s: s["name"]) == [
        {"name": "FLOW_SECRET", "valueFrom": planted["flow_secret_arn"]},
        {"name": "PREFECT_API_KEY", "valueFrom": planted["api_key_arn"]},
    ]
    # The worker signed with the planted static keys from the credentials block.
    assert "Credential=AKIACANARY" in run_task[0].headers["authorization"]
    overrides = json.loads(run_task[0].body)["overrides"]["containerOverrides"][0]
    assert "PREFECT_API_KEY" not in {item["name"] for item in overrides.get("environment", [])}


def test_no_canary_in_aws_requests_or_task_definition(planted: dict[str, Any]) -> None:
    env = planted["env"]
    ecs = boto3.client("ecs", region_name=env["AWS_REGION"], endpoint_url=env["AWS_UPSTREAM_URL"])
    run_task = next(r for r in planted["aws_requests"] if r.aws_action == "RunTask")
    stored = ecs.describe_task_definition(taskDefinition=json.loads(run_task.body)["taskDefinition"])

    for request in planted["aws_requests"]:
        assert leaks(all_canaries(planted), request.body) == [], f"{request.aws_action} request body"
    assert leaks(all_canaries(planted), json.dumps(stored, default=str).encode()) == []


def test_no_canary_in_any_log(planted: dict[str, Any]) -> None:
    env = planted["env"]
    logs = everything_from_server(
        env, "/logs/filter", {"logs": {"timestamp": {"after_": planted["started"].isoformat()}}}
    )
    runner_log = Path(env["DEVSTACK_STATE_DIR"]) / "logs" / "task-runner.log"
    texts = {
        "bootstrap output": planted["outputs"][0],
        "deploy output": planted["outputs"][1],
        "ECS worker log": planted["worker_log"],
        "task runner log": runner_log.read_text(errors="replace") if runner_log.exists() else "",
        "Prefect logs": "\n".join(log["message"] for log in logs),
    }

    assert any("DEBUG" in text for text in texts.values()), "the runs did not log at DEBUG"
    for name, text in texts.items():
        assert leaks(all_canaries(planted), text.encode()) == [], name


def test_no_canary_in_prefect_objects(planted: dict[str, Any]) -> None:
    env = planted["env"]
    since = {"after_": planted["started"].isoformat()}
    objects = {
        "artifacts": everything_from_server(env, "/artifacts/filter", {}),
        "deployments": everything_from_server(env, "/deployments/filter", {}),
        "flow runs": everything_from_server(env, "/flow_runs/filter", {"flow_runs": {"start_time": since}}),
        "blocks": everything_from_server(env, "/block_documents/filter", {}),
    }

    assert any(run["id"] == planted["flow_run"]["id"] for run in objects["flow runs"])
    for name, items in objects.items():
        assert leaks(all_canaries(planted), json.dumps(items).encode()) == [], name


def test_no_canary_in_image_or_history(planted: dict[str, Any]) -> None:
    env = planted["env"]
    image = read_deployment(env, "canary/canary")["job_variables"]["image"]
    client = docker.DockerClient(base_url=os.environ.get("DOCKER_HOST") or env["DOCKER_HOST"])
    saved = b"".join(client.api.get_image(image))
    history = json.dumps(client.api.history(image)).encode()
    inspected = json.dumps(client.api.inspect_image(image)).encode()

    assert len(saved) > 1_000_000
    for name, blob in {"docker save": saved, "history": history, "inspect": inspected}.items():
        assert leaks(all_canaries(planted), blob) == [], name


def test_no_canary_in_docker_api_calls(planted: dict[str, Any]) -> None:
    recorder: DockerRecorder = planted["recorder"]
    sent = recorder.all_sent()
    lines = recorder.request_lines()
    auth_headers = recorder.registry_auth_headers()

    assert any("/build?" in line for line in lines)
    assert any("/push" in line for line in lines)
    assert b"received flow secret" in sent, "the build context was not recorded"
    assert leaks(planted["canaries"], sent) == []
    assert REGISTRY_PASSWORD.encode() not in sent
    # The registry login reaches the engine in X-Registry-Auth of push requests only.
    assert auth_headers
    assert all(header.get("password") in (None, REGISTRY_PASSWORD) for header in auth_headers)
    assert sent.count(b"X-Registry-Auth") == sum(1 for line in lines if "/push" in line)


def test_no_canary_on_any_command_line(planted: dict[str, Any]) -> None:
    sampler: CommandLineSampler = planted["sampler"]

    assert sampler.samples > 10
    assert sampler.seen == set(PRODUCT_COMMANDS)
    assert sampler.hits == []
