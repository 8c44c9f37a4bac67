"""End-to-end tests of the dev task runner against a real AWS emulator, registry and engine.

Set these variables to run them, all on 127.0.0.1:
  RUNNER_E2E_AWS_ENDPOINT  the AWS emulator (moto server), e.g. http://127.0.0.1:5001
  RUNNER_E2E_DOCKER_HOST   the Docker engine, e.g. unix:///path/to/docker.sock
  RUNNER_E2E_BASE_IMAGE    an image in that engine with /bin/sh, pushed as the test image
  RUNNER_E2E_REGISTRY      registry that accepts the emulator's ECR token (default 127.0.0.1:5000)

By default the module starts its own runner, limited to a cluster created for the run. A
runner already serving all clusters of the same emulator would take these tasks too. In
that case set RUNNER_E2E_STATE_DIR to that runner's DEVSTACK_STATE_DIR, and optionally
RUNNER_E2E_RUNNER_LOG to its log for the output checks. The tests then use that runner
and skip the tests that start, kill or stop runners.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import docker
import pytest

AWS_ENDPOINT = os.environ.get("RUNNER_E2E_AWS_ENDPOINT", "")
DOCKER_HOST = os.environ.get("RUNNER_E2E_DOCKER_HOST", "")
BASE_IMAGE = os.environ.get("RUNNER_E2E_BASE_IMAGE", "")
REGISTRY = os.environ.get("RUNNER_E2E_REGISTRY", "127.0.0.1:5000")
SHARED_STATE_DIR = os.environ.get("RUNNER_E2E_STATE_DIR", "")
SHARED_RUNNER_LOG = os.environ.get("RUNNER_E2E_RUNNER_LOG", "")
REGION = "us-east-1"
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
TASK_TIMEOUT_SECONDS = 120.0
EVENT_TIMEOUT_SECONDS = 30.0
SHUTDOWN_TIMEOUT_SECONDS = 60.0
PROBE_EXIT_CODE = 3
CONTAINER_MEMORY_MIB = 96

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not (AWS_ENDPOINT and DOCKER_HOST and BASE_IMAGE),
        reason=(
            "set RUNNER_E2E_AWS_ENDPOINT, RUNNER_E2E_DOCKER_HOST and RUNNER_E2E_BASE_IMAGE "
            "to run the task runner against a local AWS emulator and Docker engine"
        ),
    ),
]
needs_own_runner = pytest.mark.skipif(
    bool(SHARED_STATE_DIR),
    reason="RUNNER_E2E_STATE_DIR is set, so the tests use a runner they must not stop",
)


@dataclass
class Stack:
    """Clients and names shared by the tests of one module run."""

    suffix: str
    clients: dict[str, Any]
    api: docker.APIClient
    cluster_arn: str
    network: dict[str, Any]
    queue_url: str
    image: str
    image_digest: str
    work_dir: Path  # host folder for the probe's bind mount
    state_dir: Path
    runner_log: Path | None
    runner: subprocess.Popen[bytes] | None
    received_events: dict[str, list[dict[str, Any]]]


def aws_client(service: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=AWS_ENDPOINT,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def registry_auth(ecr: Any) -> dict[str, str]:
    token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    username, _, password = base64.b64decode(token).decode().partition(":")
    return {"username": username, "password": password, "serveraddress": REGISTRY}


def push_probe_image(api: docker.APIClient, ecr: Any, suffix: str) -> tuple[str, str]:
    """Tag the base image into the registry, push it and return (reference, pushed digest)."""
    repository = f"{REGISTRY}/runner-e2e/probe"
    api.tag(BASE_IMAGE, repository, tag=suffix)
    digest = ""
    for progress in api.push(repository, tag=suffix, stream=True, decode=True, auth_config=registry_auth(ecr)):
        assert "error" not in progress, f"push of {repository}:{suffix} failed: {progress}"
        digest = (progress.get("aux") or {}).get("Digest", digest)
    assert digest.startswith("sha256:"), "the push reported no digest"
    # Drop the local tag, so the runner has to pull the image from the registry.
    api.remove_image(f"{repository}:{suffix}")
    return f"{repository}:{suffix}", digest


def default_network(ec2: Any) -> dict[str, Any]:
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    group = ec2.describe_security_groups()["SecurityGroups"][0]["GroupId"]
    return {
        "awsvpcConfiguration": {
            "subnets": [subnet],
            "securityGroups": [group],
            "assignPublicIp": "DISABLED",
        }
    }


def create_event_queue(clients: dict[str, Any], suffix: str, cluster_arn: str) -> str:
    """Create an SQS queue that an EventBridge rule feeds with this cluster's ECS events."""
    queue_url = clients["sqs"].create_queue(QueueName=f"runner-e2e-{suffix}")["QueueUrl"]
    queue_arn = clients["sqs"].get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    rule = f"runner-e2e-{suffix}"
    pattern = {
        "source": ["aws.ecs"],
        "detail-type": ["ECS Task State Change"],
        "detail": {"clusterArn": [cluster_arn]},
    }
    clients["events"].put_rule(Name=rule, EventPattern=json.dumps(pattern))
    clients["events"].put_targets(Rule=rule, Targets=[{"Id": "queue", "Arn": queue_arn}])
    return queue_url


def start_runner(state_dir: Path, log_path: Path, cluster_name: str) -> subprocess.Popen[bytes]:
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_ENDPOINT_URL": AWS_ENDPOINT,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "DOCKER_HOST": DOCKER_HOST,
        "DEVSTACK_STATE_DIR": str(state_dir),
        "DEVSTACK_RUNNER_CLUSTERS": cluster_name,
        "DEVSTACK_RUNNER_POLL_INTERVAL": "0.5",
        "PYTHONUNBUFFERED": "1",
    }
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "devstack.runner"],
            cwd=REPOSITORY_ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    suffix = uuid.uuid4().hex[:10]
    clients = {name: aws_client(name) for name in ("ecs", "ecr", "ec2", "events", "sqs", "secretsmanager", "ssm")}
    api = docker.APIClient(base_url=DOCKER_HOST)
    image, digest = push_probe_image(api, clients["ecr"], suffix)

    cluster_name = f"runner-e2e-{suffix}"
    cluster_arn = clients["ecs"].create_cluster(clusterName=cluster_name)["cluster"]["clusterArn"]
    queue_url = create_event_queue(clients, suffix, cluster_arn)

    work_dir = tmp_path_factory.mktemp("runner-e2e")
    runner: subprocess.Popen[bytes] | None = None
    if SHARED_STATE_DIR:
        state_dir = Path(SHARED_STATE_DIR)
        runner_log = Path(SHARED_RUNNER_LOG) if SHARED_RUNNER_LOG else None
    else:
        state_dir = work_dir
        runner_log = work_dir / "runner.log"
        runner = start_runner(state_dir, runner_log, cluster_name)

    yield Stack(
        suffix=suffix,
        clients=clients,
        api=api,
        cluster_arn=cluster_arn,
        network=default_network(clients["ec2"]),
        queue_url=queue_url,
        image=image,
        image_digest=digest,
        work_dir=work_dir,
        state_dir=state_dir,
        runner_log=runner_log,
        runner=runner,
        received_events={},
    )

    if runner is not None and runner.poll() is None:
        runner.kill()
        runner.wait()
    remove_leftover_containers(api, suffix)
    clients["events"].remove_targets(Rule=f"runner-e2e-{suffix}", Ids=["queue"])
    clients["events"].delete_rule(Name=f"runner-e2e-{suffix}")
    clients["sqs"].delete_queue(QueueUrl=queue_url)
    if api.images(name=image):
        api.remove_image(image)


def remove_leftover_containers(api: docker.APIClient, suffix: str) -> None:
    """Remove the containers of this run's clusters that a killed runner left behind."""
    for container in api.containers(all=True, filters={"label": "devstack.runner"}):
        cluster = container["Labels"].get("com.amazonaws.ecs.cluster", "")
        if f"runner-e2e-{suffix}" in cluster:
            api.remove_container(container["Id"], force=True)


def runner_output(stack: Stack) -> str:
    if stack.runner_log is None:
        return "(runner log unknown: set RUNNER_E2E_RUNNER_LOG)"
    return stack.runner_log.read_text(errors="replace")


def wait_for_record(stack: Stack, task_arn: str) -> dict[str, Any]:
    """Poll tasks.jsonl until the runner has written the task's record."""
    records_path = stack.state_dir / "runner" / "tasks.jsonl"
    deadline = time.monotonic() + TASK_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if stack.runner is not None:
            assert stack.runner.poll() is None, f"runner exited early:\n{runner_output(stack)}"
        if records_path.exists():
            for line in records_path.read_text().splitlines():
                record = json.loads(line)
                if record["task_arn"] == task_arn:
                    return dict(record)
        time.sleep(0.2)
    pytest.fail(f"no record for {task_arn} after {TASK_TIMEOUT_SECONDS} s:\n{runner_output(stack)}")


def wait_for_events(stack: Stack, task_arn: str, statuses: list[str]) -> list[dict[str, Any]]:
    """Read the event queue until the task's events with these lastStatus values arrived."""
    deadline = time.monotonic() + EVENT_TIMEOUT_SECONDS
    sqs = stack.clients["sqs"]
    while time.monotonic() < deadline:
        received = stack.received_events.get(task_arn, [])
        if sorted(event["detail"]["lastStatus"] for event in received) == sorted(statuses):
            return received
        response = sqs.receive_message(QueueUrl=stack.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in response.get("Messages", []):
            event = json.loads(message["Body"])
            stack.received_events.setdefault(event["detail"]["taskArn"], []).append(event)
            sqs.delete_message(QueueUrl=stack.queue_url, ReceiptHandle=message["ReceiptHandle"])
    pytest.fail(f"events for {task_arn}: {stack.received_events.get(task_arn)}, expected {statuses}")


def register_task_definition(stack: Stack, image: str, **container: Any) -> str:
    definition = {
        "name": "prefect",
        "image": image,
        "essential": True,
        "memory": CONTAINER_MEMORY_MIB,
        "command": ["sh", "-c", "echo definition command; exit 42"],
        "environment": [
            {"name": "FROM_DEFINITION", "value": "definition"},
            {"name": "OVERRIDDEN", "value": "definition"},
        ],
    }
    definition.update(container)
    response = stack.clients["ecs"].register_task_definition(
        family=f"runner-e2e-{stack.suffix}",
        requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc",
        cpu="256",
        memory="512",
        containerDefinitions=[definition],
        volumes=[{"name": "out", "host": {"sourcePath": str(stack.work_dir / "out")}}],
    )
    return str(response["taskDefinition"]["taskDefinitionArn"])


def run_task(
    stack: Stack,
    task_definition_arn: str,
    overrides: dict[str, Any],
    cluster_arn: str | None = None,
) -> str:
    response = stack.clients["ecs"].run_task(
        cluster=cluster_arn or stack.cluster_arn,
        taskDefinition=task_definition_arn,
        launchType="FARGATE",
        startedBy="runner-e2e",
        networkConfiguration=stack.network,
        overrides=overrides,
    )
    return str(response["tasks"][0]["taskArn"])


def describe_task(stack: Stack, task_arn: str) -> dict[str, Any]:
    cluster = task_arn.split("/")[1]
    tasks = stack.clients["ecs"].describe_tasks(cluster=cluster, tasks=[task_arn])
    return dict(tasks["tasks"][0])


def command_override(script: str) -> dict[str, Any]:
    return {"containerOverrides": [{"name": "prefect", "command": ["sh", "-c", script]}]}


def labelled_containers(stack: Stack, task_arn: str) -> list[dict[str, Any]]:
    label = f"com.amazonaws.ecs.task-arn={task_arn}"
    return list(stack.api.containers(all=True, filters={"label": label}))


def wait_for_running_container(stack: Stack, task_arn: str) -> None:
    deadline = time.monotonic() + TASK_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if any(c["State"] == "running" for c in labelled_containers(stack, task_arn)):
            return
        time.sleep(0.2)
    pytest.fail(f"no running container for {task_arn}:\n{runner_output(stack)}")


# The probe traps SIGTERM, as a flow run process does, and exits with 143.
LONG_RUNNING_SCRIPT = "trap 'exit 143' TERM; sleep 300 & wait"


def test_task_runs_as_ecs_would(stack: Stack) -> None:
    password = secrets.token_hex(12)
    token = secrets.token_hex(12)
    secret_arn = stack.clients["secretsmanager"].create_secret(
        Name=f"runner-e2e/{stack.suffix}/db",
        SecretString=json.dumps({"password": password}),
    )["ARN"]
    parameter = f"/runner-e2e/{stack.suffix}/token"
    stack.clients["ssm"].put_parameter(Name=parameter, Value=token, Type="SecureString")
    parameter_arn = f"arn:aws:ssm:{REGION}:123456789012:parameter{parameter}"
    (stack.work_dir / "out").mkdir()
    definition_arn = register_task_definition(
        stack,
        stack.image,
        secrets=[
            {"name": "DB_PASSWORD", "valueFrom": f"{secret_arn}:password::"},
            {"name": "API_TOKEN", "valueFrom": parameter_arn},
        ],
        mountPoints=[{"sourceVolume": "out", "containerPath": "/out", "readOnly": False}],
    )
    flow_run_id = str(uuid.uuid4())
    probe = (
        "env > /out/env.txt; "
        "{ cat /sys/fs/cgroup/memory.max 2>/dev/null "
        "|| cat /sys/fs/cgroup/memory/memory.limit_in_bytes; } > /out/memory.txt; "
        'echo "probe output: password $DB_PASSWORD"; '
        f"exit {PROBE_EXIT_CODE}"
    )
    overrides = {
        "containerOverrides": [
            {
                "name": "prefect",
                "command": ["sh", "-c", probe],
                "environment": [
                    {"name": "OVERRIDDEN", "value": "override"},
                    {"name": "PREFECT__FLOW_RUN_ID", "value": flow_run_id},
                ],
            }
        ]
    }

    task_arn = run_task(stack, definition_arn, overrides)
    record = wait_for_record(stack, task_arn)

    assert record["exit_code"] == PROBE_EXIT_CODE, runner_output(stack)
    assert record["image"] == stack.image
    assert record["image_digest"] == stack.image_digest
    assert record["flow_run_id"] == flow_run_id
    assert record["cluster_arn"] == stack.cluster_arn
    assert record["task_definition_arn"] == definition_arn
    assert record["started_at"] and record["stopped_at"]

    seen = dict(
        line.split("=", 1) for line in (stack.work_dir / "out" / "env.txt").read_text().splitlines() if "=" in line
    )
    assert seen["FROM_DEFINITION"] == "definition"
    assert seen["OVERRIDDEN"] == "override"
    assert seen["PREFECT__FLOW_RUN_ID"] == flow_run_id
    assert seen["DB_PASSWORD"] == password
    assert seen["API_TOKEN"] == token
    memory_limit = int((stack.work_dir / "out" / "memory.txt").read_text())
    assert memory_limit == CONTAINER_MEMORY_MIB * 1024 * 1024

    task = describe_task(stack, task_arn)
    assert task["lastStatus"] == "STOPPED"
    assert task["desiredStatus"] == "STOPPED"
    assert task["stoppedReason"] == (
        f"Essential container in task exited (container 'prefect' exit code {PROBE_EXIT_CODE})"
    )

    received = wait_for_events(stack, task_arn, ["RUNNING", "STOPPED"])
    by_status = {event["detail"]["lastStatus"]: event for event in received}
    running, stopped = by_status["RUNNING"], by_status["STOPPED"]
    assert running["source"] == "aws.ecs"
    assert running["detail-type"] == "ECS Task State Change"
    assert running["resources"] == [task_arn]
    assert running["detail"]["containers"][0]["imageDigest"] == stack.image_digest
    assert running["detail"]["overrides"] == overrides
    assert stopped["detail"]["stopCode"] == "EssentialContainerExited"
    assert stopped["detail"]["stoppedReason"] == task["stoppedReason"]
    assert stopped["detail"]["containers"][0]["exitCode"] == PROBE_EXIT_CODE
    assert stopped["detail"]["version"] > running["detail"]["version"]

    assert not labelled_containers(stack, task_arn)
    if stack.runner_log is None:
        return
    output = runner_output(stack)
    assert "probe output: password ****" in output
    assert password not in output
    assert token not in output


def test_missing_image_fails_to_start(stack: Stack) -> None:
    missing = f"{REGISTRY}/runner-e2e/missing:{stack.suffix}"
    definition_arn = register_task_definition(stack, missing)

    task_arn = run_task(stack, definition_arn, {"containerOverrides": [{"name": "prefect"}]})
    record = wait_for_record(stack, task_arn)

    assert record["exit_code"] is None
    assert record["image_digest"] is None
    assert record["error"].startswith("CannotPullContainerError: ")
    task = describe_task(stack, task_arn)
    assert task["lastStatus"] == "STOPPED"
    assert task["stoppedReason"].startswith("CannotPullContainerError: ")
    received = wait_for_events(stack, task_arn, ["STOPPED"])
    assert received[0]["detail"]["stopCode"] == "TaskFailedToStart"
    assert "exitCode" not in received[0]["detail"]["containers"][0]


def test_memory_limit_kills_container(stack: Stack) -> None:
    definition_arn = register_task_definition(stack, stack.image)
    # `tail -n 1` buffers the whole newline-free input, 300 MB, in memory.
    script = "head -c 300000000 /dev/zero | tail -n 1 > /dev/null"

    task_arn = run_task(stack, definition_arn, command_override(script))
    record = wait_for_record(stack, task_arn)

    assert record["exit_code"] == 137
    received = wait_for_events(stack, task_arn, ["RUNNING", "STOPPED"])
    stopped = next(e for e in received if e["detail"]["lastStatus"] == "STOPPED")
    container = stopped["detail"]["containers"][0]
    assert container["exitCode"] == 137
    assert container["reason"] == "OutOfMemoryError: Container killed due to memory usage"


def test_handled_task_not_rerun(stack: Stack) -> None:
    records_path = stack.state_dir / "runner" / "tasks.jsonl"
    handled = (stack.state_dir / "runner" / "handled_tasks.txt").read_text().splitlines()
    records = [json.loads(line) for line in records_path.read_text().splitlines()]

    assert len(handled) == len(set(handled))
    assert len(records) == len({record["task_arn"] for record in records})


def test_tasks_run_concurrently(stack: Stack) -> None:
    definition_arn = register_task_definition(stack, stack.image)

    first = run_task(stack, definition_arn, command_override("sleep 2; exit 4"))
    second = run_task(stack, definition_arn, command_override("sleep 2; exit 5"))
    first_record = wait_for_record(stack, first)
    second_record = wait_for_record(stack, second)

    assert first_record["exit_code"] == 4
    assert second_record["exit_code"] == 5
    assert first_record["started_at"] < second_record["stopped_at"]
    assert second_record["started_at"] < first_record["stopped_at"]


@needs_own_runner
def test_restarted_runner_stops_unfinished_task(stack: Stack) -> None:
    # The module's cluster name is a prefix of this one, which moto's ListTasks matches
    # as a substring: the module's runner must still leave this cluster's task alone.
    cluster_name = f"runner-e2e-{stack.suffix}-restart"
    cluster_arn = stack.clients["ecs"].create_cluster(clusterName=cluster_name)["cluster"]["clusterArn"]
    state_dir = stack.work_dir / "restart"
    state_dir.mkdir()
    definition_arn = register_task_definition(stack, stack.image)
    first_runner = start_runner(state_dir, state_dir / "first.log", cluster_name)
    task_arn = run_task(stack, definition_arn, command_override(LONG_RUNNING_SCRIPT), cluster_arn)
    wait_for_running_container(stack, task_arn)
    first_runner.kill()
    first_runner.wait()

    second_log = state_dir / "second.log"
    second_runner = start_runner(state_dir, second_log, cluster_name)
    try:
        restarted = Stack(
            **{
                **stack.__dict__,
                "state_dir": state_dir,
                "runner": second_runner,
                "runner_log": second_log,
            }
        )
        record = wait_for_record(restarted, task_arn)
    finally:
        second_runner.send_signal(signal.SIGTERM)
        second_runner.wait(timeout=SHUTDOWN_TIMEOUT_SECONDS)

    assert record["exit_code"] is None
    assert record["error"] == "the dev task runner restarted before the task finished"
    task = describe_task(stack, task_arn)
    assert task["lastStatus"] == "STOPPED"
    assert task["stoppedReason"].startswith("Task stopped because the dev task runner restarted")
    assert not labelled_containers(stack, task_arn)


@needs_own_runner
def test_runner_stops_tasks_on_sigterm(stack: Stack) -> None:
    definition_arn = register_task_definition(stack, stack.image, stopTimeout=10)
    task_arn = run_task(stack, definition_arn, command_override(LONG_RUNNING_SCRIPT))
    wait_for_running_container(stack, task_arn)

    assert stack.runner is not None
    stack.runner.send_signal(signal.SIGTERM)
    exit_code = stack.runner.wait(timeout=SHUTDOWN_TIMEOUT_SECONDS)

    assert exit_code == 0, runner_output(stack)
    assert "Received SIGTERM; shutting down" in runner_output(stack)
    records = [json.loads(line) for line in (stack.state_dir / "runner" / "tasks.jsonl").read_text().splitlines()]
    record = next(record for record in records if record["task_arn"] == task_arn)
    assert record["exit_code"] == 143
    assert record["stop_code"] == "UserInitiated"
    task = describe_task(stack, task_arn)
    assert task["lastStatus"] == "STOPPED"
    assert task["stoppedReason"] == (
        "Task stopped by the dev task runner on shutdown (container 'prefect' exit code 143)"
    )
    assert not labelled_containers(stack, task_arn)
