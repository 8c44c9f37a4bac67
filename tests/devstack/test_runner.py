"""Unit tests of the dev task runner's pure parts: no AWS emulator, no Docker engine."""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from devstack import runner, runner_containers, runner_events

SECRET_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:team/db-AbCdEf"
TASK_ARN = "arn:aws:ecs:us-east-1:123456789012:task/dev/0123456789abcdef0123456789abcdef"
CLUSTER_ARN = "arn:aws:ecs:us-east-1:123456789012:cluster/dev"
TASK_DEFINITION_ARN = "arn:aws:ecs:us-east-1:123456789012:task-definition/flow:3"
DIGEST = "sha256:" + "ab" * 32


def make_task_definition(**container_settings: Any) -> dict[str, Any]:
    container = {
        "name": "prefect",
        "image": "127.0.0.1:5000/flows/hello:abc123",
        "command": ["python", "-m", "definition"],
        "entryPoint": ["/bin/entry"],
        "workingDirectory": "/opt/flow",
        "environment": [
            {"name": "SHARED", "value": "from-definition"},
            {"name": "ONLY_DEFINITION", "value": "kept"},
        ],
        "secrets": [{"name": "DB_PASSWORD", "valueFrom": f"{SECRET_ARN}:password::"}],
        "memory": 256,
    }
    container.update(container_settings)
    return {
        "taskDefinitionArn": TASK_DEFINITION_ARN,
        "family": "flow",
        "revision": 3,
        "cpu": "256",
        "memory": "512",
        "containerDefinitions": [container],
    }


def make_task(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "taskArn": TASK_ARN,
        "clusterArn": CLUSTER_ARN,
        "taskDefinitionArn": TASK_DEFINITION_ARN,
        "desiredStatus": "RUNNING",
        "group": "family:flow",
        "startedBy": "prefect-worker",
        "launchType": "FARGATE",
        "overrides": overrides or {"containerOverrides": [{"name": "prefect"}]},
        "containers": [
            {
                "containerArn": "arn:aws:ecs:us-east-1:123456789012:container/dev/c1",
                "name": "prefect",
                "image": "127.0.0.1:5000/flows/hello:abc123",
                "exitCode": 0,
                "cpu": "0",
                "memory": "256",
            }
        ],
    }


# Effective container settings


def test_merge_environment_override_wins() -> None:
    merged = runner_containers.merge_environment(
        [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
        [{"name": "B", "value": "override"}, {"name": "C", "value": "3"}],
    )

    assert merged == {"A": "1", "B": "override", "C": "3"}


def test_merge_environment_without_lists() -> None:
    assert runner_containers.merge_environment(None, None) == {}


def test_container_spec_applies_overrides() -> None:
    overrides = {
        "containerOverrides": [
            {
                "name": "prefect",
                "command": ["prefect", "flow-run", "execute"],
                "environment": [
                    {"name": "SHARED", "value": "from-override"},
                    {"name": "PREFECT__FLOW_RUN_ID", "value": "run-1"},
                ],
            }
        ]
    }

    spec = runner_containers.build_container_spec(make_task_definition(), overrides)

    assert spec.name == "prefect"
    assert spec.image == "127.0.0.1:5000/flows/hello:abc123"
    assert spec.command == ["prefect", "flow-run", "execute"]
    assert spec.entry_point == ["/bin/entry"]
    assert spec.working_directory == "/opt/flow"
    assert spec.environment == {
        "SHARED": "from-override",
        "ONLY_DEFINITION": "kept",
        "PREFECT__FLOW_RUN_ID": "run-1",
    }
    assert spec.memory_mib == 256


def test_container_spec_without_overrides() -> None:
    spec = runner_containers.build_container_spec(make_task_definition(), None)

    assert spec.command == ["python", "-m", "definition"]
    assert spec.environment["SHARED"] == "from-definition"


def test_container_spec_override_cannot_change_image() -> None:
    overrides = {"containerOverrides": [{"name": "prefect", "image": "elsewhere/evil:1"}]}

    spec = runner_containers.build_container_spec(make_task_definition(), overrides)

    assert spec.image == "127.0.0.1:5000/flows/hello:abc123"


def test_container_spec_parses_secrets() -> None:
    spec = runner_containers.build_container_spec(make_task_definition(), None)

    assert spec.secrets == {
        "DB_PASSWORD": runner_containers.SecretReference(
            kind="secretsmanager", secret_id=SECRET_ARN, json_key="password"
        )
    }


@pytest.mark.parametrize(
    ("container_override", "container_memory", "task_override", "expected"),
    [
        ({"memory": 1024}, 256, {}, 1024),
        ({}, 256, {"memory": "2048"}, 256),
        ({}, None, {"memory": "2048"}, 2048),
        ({}, None, {}, 512),
    ],
)
def test_memory_precedence(
    container_override: dict[str, Any],
    container_memory: int | None,
    task_override: dict[str, Any],
    expected: int,
) -> None:
    definition = make_task_definition(memory=container_memory)
    overrides = dict(task_override)
    overrides["containerOverrides"] = [{"name": "prefect", **container_override}]

    spec = runner_containers.build_container_spec(definition, overrides)

    assert spec.memory_mib == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), (512, 512), ("512", 512), ("1 GB", 1024), ("2GB", 2048)],
)
def test_parse_memory_mib(value: Any, expected: int | None) -> None:
    assert runner_containers.parse_memory_mib(value) == expected


def test_parse_memory_mib_rejects_text() -> None:
    with pytest.raises(runner_containers.TaskDefinitionError, match="invalid memory value"):
        runner_containers.parse_memory_mib("lots")


def test_select_container_named_in_overrides() -> None:
    definition = make_task_definition()
    definition["containerDefinitions"].insert(
        0, {"name": "sidecar", "image": "127.0.0.1:5000/sidecar:1", "essential": True}
    )
    overrides = {"containerOverrides": [{"name": "prefect"}]}

    spec = runner_containers.build_container_spec(definition, overrides)

    assert spec.name == "prefect"
    assert spec.ignored_container_names == ["sidecar"]


def test_select_container_first_essential() -> None:
    definition = make_task_definition()
    definition["containerDefinitions"].insert(
        0, {"name": "helper", "image": "127.0.0.1:5000/helper:1", "essential": False}
    )

    spec = runner_containers.build_container_spec(definition, {})

    assert spec.name == "prefect"


def test_container_spec_without_containers() -> None:
    definition = make_task_definition()
    definition["containerDefinitions"] = []

    with pytest.raises(runner_containers.TaskDefinitionError, match="has no containers"):
        runner_containers.build_container_spec(definition, {})


def test_container_spec_host_mounts() -> None:
    definition = make_task_definition(
        mountPoints=[
            {"sourceVolume": "out", "containerPath": "/out", "readOnly": False},
            {"sourceVolume": "efs", "containerPath": "/efs"},
        ]
    )
    definition["volumes"] = [
        {"name": "out", "host": {"sourcePath": "/tmp/out"}},
        {"name": "efs", "efsVolumeConfiguration": {"fileSystemId": "fs-1"}},
    ]

    spec = runner_containers.build_container_spec(definition, {})

    assert spec.mounts == [
        runner_containers.VolumeMount(source_path="/tmp/out", container_path="/out", read_only=False)
    ]
    assert spec.unsupported_settings == ["mountPoints[efs]"]


# Secret references


@pytest.mark.parametrize(
    ("value_from", "expected"),
    [
        (
            SECRET_ARN,
            runner_containers.SecretReference(kind="secretsmanager", secret_id=SECRET_ARN),
        ),
        (
            f"{SECRET_ARN}:password::",
            runner_containers.SecretReference(kind="secretsmanager", secret_id=SECRET_ARN, json_key="password"),
        ),
        (
            f"{SECRET_ARN}:password:AWSPREVIOUS:",
            runner_containers.SecretReference(
                kind="secretsmanager",
                secret_id=SECRET_ARN,
                json_key="password",
                version_stage="AWSPREVIOUS",
            ),
        ),
        (
            f"{SECRET_ARN}:::v-123",
            runner_containers.SecretReference(kind="secretsmanager", secret_id=SECRET_ARN, version_id="v-123"),
        ),
        (
            "arn:aws:ssm:us-east-1:123456789012:parameter/team/db/password",
            runner_containers.SecretReference(kind="ssm", secret_id="/team/db/password"),
        ),
        (
            "arn:aws:ssm:us-east-1:123456789012:parameter/flat-name",
            runner_containers.SecretReference(kind="ssm", secret_id="flat-name"),
        ),
        (
            "plain-parameter",
            runner_containers.SecretReference(kind="ssm", secret_id="plain-parameter"),
        ),
    ],
)
def test_parse_secret_reference(value_from: str, expected: runner_containers.SecretReference) -> None:
    assert runner_containers.parse_secret_reference(value_from) == expected


@pytest.mark.parametrize(
    "value_from",
    [
        "",
        "arn:aws:secretsmanager:us-east-1:123456789012:secret",
        f"{SECRET_ARN}:a:b:c:d",
        "arn:aws:s3:::bucket/key",
    ],
)
def test_parse_secret_reference_rejects(value_from: str) -> None:
    with pytest.raises(runner_containers.TaskDefinitionError):
        runner_containers.parse_secret_reference(value_from)


# Image references


@pytest.mark.parametrize(
    ("image", "registry", "repository", "tag", "digest"),
    [
        (
            "127.0.0.1:5000/flows/hello:abc",
            "127.0.0.1:5000",
            "127.0.0.1:5000/flows/hello",
            "abc",
            None,
        ),
        ("127.0.0.1:5000/hello", "127.0.0.1:5000", "127.0.0.1:5000/hello", None, None),
        ("localhost/hello:1", "localhost", "localhost/hello", "1", None),
        (
            f"127.0.0.1:5000/hello:1@{DIGEST}",
            "127.0.0.1:5000",
            "127.0.0.1:5000/hello",
            "1",
            DIGEST,
        ),
        (
            "prefecthq/prefect:3-python3.12",
            "docker.io",
            "prefecthq/prefect",
            "3-python3.12",
            None,
        ),
        ("debian", "docker.io", "debian", None, None),
    ],
)
def test_parse_image_reference(image: str, registry: str, repository: str, tag: str | None, digest: str | None) -> None:
    reference = runner_containers.parse_image_reference(image)

    assert reference.registry == registry
    assert reference.repository == repository
    assert reference.tag == tag
    assert reference.digest == digest


def test_image_reference_pull_ref_prefers_digest() -> None:
    reference = runner_containers.parse_image_reference(f"127.0.0.1:5000/hello:1@{DIGEST}")

    assert reference.pull_ref == DIGEST
    assert runner_containers.pulled_reference(reference) == f"127.0.0.1:5000/hello@{DIGEST}"


@pytest.mark.parametrize(
    ("registry", "expected"),
    [
        ("127.0.0.1:5000", True),
        ("127.0.0.1", True),
        ("localhost:5000", True),
        ("[::1]:5000", True),
        ("123456789012.dkr.ecr.us-east-1.amazonaws.com", False),
        ("docker.io", False),
        ("10.0.0.1:5000", False),
    ],
)
def test_is_loopback_registry(registry: str, expected: bool) -> None:
    assert runner_containers.is_loopback_registry(registry) is expected


def test_find_repo_digest() -> None:
    digests = [f"other/repo@sha256:{'cd' * 32}", f"127.0.0.1:5000/hello@{DIGEST}"]

    assert runner_containers.find_repo_digest(digests, "127.0.0.1:5000/hello") == DIGEST
    assert runner_containers.find_repo_digest(digests, "127.0.0.1:5000/missing") is None


def test_container_name_for_replaces_invalid_characters() -> None:
    name = runner_containers.container_name_for("my flow", 3, "prefect", "abc")

    assert name == "ecs-my-flow-3-prefect-abc"


def test_split_lines_across_chunks() -> None:
    chunks = [
        b"first li",
        b"ne\nsecond\r\nthi",
        "rd \u00e9".encode()[:-1],
        "rd \u00e9".encode()[-1:],
    ]

    lines = list(runner_containers.split_lines(chunks))

    assert lines == ["first line", "second", "third \u00e9"]


# Stop reasons and events


def test_essential_container_exited_reason() -> None:
    reason = runner_events.essential_container_exited_reason("prefect", 1)

    assert reason == "Essential container in task exited (container 'prefect' exit code 1)"


def test_failed_to_start_reason_is_one_line() -> None:
    reason = runner_events.failed_to_start_reason(
        runner_events.CANNOT_PULL_CONTAINER_ERROR, "pull failed:\n  manifest unknown"
    )

    assert reason == "CannotPullContainerError: pull failed: manifest unknown"


def test_failed_to_start_reason_truncated() -> None:
    reason = runner_events.failed_to_start_reason(runner_events.RESOURCE_INITIALIZATION_ERROR, "x" * 400)

    assert len(reason) == runner_events.MAX_STOP_REASON_LENGTH
    assert reason.endswith("...")


def test_iso_timestamp_milliseconds_utc() -> None:
    moment = dt.datetime(2024, 1, 2, 4, 4, 5, 678901, tzinfo=dt.timezone(dt.timedelta(hours=1)))

    assert runner_events.iso_timestamp(moment) == "2024-01-02T03:04:05.678Z"
    assert runner_events.iso_timestamp(None) is None


def make_state(**changes: Any) -> runner_events.TaskRunState:
    start = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    state = runner_events.TaskRunState(
        created_at=start,
        pull_started_at=start,
        pull_stopped_at=start + dt.timedelta(seconds=1),
        started_at=start + dt.timedelta(seconds=2),
        image_digest=DIGEST,
        runtime_id="container-id",
        last_status="RUNNING",
        version=1,
    )
    for name, value in changes.items():
        setattr(state, name, value)
    return state


def test_running_event_detail_shape() -> None:
    overrides = {"containerOverrides": [{"name": "prefect", "command": ["run"]}]}
    task = make_task(overrides)

    detail = runner_events.build_task_state_change_detail(
        task,
        make_task_definition(),
        "prefect",
        "127.0.0.1:5000/flows/hello:abc123",
        make_state(),
    )

    assert detail["clusterArn"] == CLUSTER_ARN
    assert detail["taskArn"] == TASK_ARN
    assert detail["taskDefinitionArn"] == TASK_DEFINITION_ARN
    assert detail["lastStatus"] == "RUNNING"
    assert detail["desiredStatus"] == "RUNNING"
    assert detail["group"] == "family:flow"
    assert detail["startedBy"] == "prefect-worker"
    assert detail["launchType"] == "FARGATE"
    assert detail["cpu"] == "256"
    assert detail["memory"] == "512"
    assert detail["overrides"] == overrides
    assert detail["createdAt"] == "2024-01-02T03:04:05.000Z"
    assert detail["startedAt"] == "2024-01-02T03:04:07.000Z"
    assert detail["version"] == 1
    assert "stopCode" not in detail
    assert "stoppedAt" not in detail
    assert detail["containers"] == [
        {
            "containerArn": "arn:aws:ecs:us-east-1:123456789012:container/dev/c1",
            "name": "prefect",
            "image": "127.0.0.1:5000/flows/hello:abc123",
            "imageDigest": DIGEST,
            "lastStatus": "RUNNING",
            "runtimeId": "container-id",
            "taskArn": TASK_ARN,
            "networkInterfaces": [],
            "cpu": "0",
            "memory": "256",
        }
    ]


def test_stopped_event_detail_shape() -> None:
    stopped_at = dt.datetime(2024, 1, 2, 3, 5, 0, tzinfo=dt.UTC)
    reason = runner_events.essential_container_exited_reason("prefect", 1)
    state = make_state(
        last_status="STOPPED",
        exit_code=1,
        stopped_at=stopped_at,
        stop_code=runner_events.STOP_CODE_ESSENTIAL_CONTAINER_EXITED,
        stopped_reason=reason,
        version=2,
    )

    detail = runner_events.build_task_state_change_detail(
        make_task(), make_task_definition(), "prefect", "image:1", state
    )

    assert detail["lastStatus"] == "STOPPED"
    assert detail["desiredStatus"] == "STOPPED"
    assert detail["stopCode"] == "EssentialContainerExited"
    assert detail["stoppedReason"] == reason
    assert detail["stoppedAt"] == "2024-01-02T03:05:00.000Z"
    assert detail["executionStoppedAt"] == "2024-01-02T03:05:00.000Z"
    assert detail["containers"][0]["exitCode"] == 1
    assert detail["containers"][0]["lastStatus"] == "STOPPED"
    assert "reason" not in detail["containers"][0]


def test_failed_to_start_event_has_no_exit_code() -> None:
    state = runner_events.TaskRunState(
        created_at=dt.datetime(2024, 1, 2, tzinfo=dt.UTC),
        last_status="STOPPED",
        stop_code=runner_events.STOP_CODE_TASK_FAILED_TO_START,
        stopped_reason="CannotPullContainerError: not found",
    )

    detail = runner_events.build_task_state_change_detail(make_task(), {}, "prefect", "i:1", state)

    assert detail["stopCode"] == "TaskFailedToStart"
    assert "exitCode" not in detail["containers"][0]
    assert "imageDigest" not in detail["containers"][0]
    assert "startedAt" not in detail


def test_oom_killed_container_reason() -> None:
    state = make_state(last_status="STOPPED", exit_code=137, oom_killed=True)

    detail = runner_events.build_task_state_change_detail(make_task(), {}, "prefect", "i:1", state)

    assert detail["containers"][0]["reason"] == runner_events.OUT_OF_MEMORY_REASON


def test_put_events_entry() -> None:
    moment = dt.datetime(2024, 1, 2, tzinfo=dt.UTC)
    detail = {"taskArn": TASK_ARN, "lastStatus": "RUNNING"}

    entry = runner_events.build_put_events_entry(detail, moment)

    assert entry["Source"] == "aws.ecs"
    assert entry["DetailType"] == "ECS Task State Change"
    assert entry["Resources"] == [TASK_ARN]
    assert json.loads(entry["Detail"]) == detail
    assert entry["Time"] == moment


def test_task_record_fields() -> None:
    state = make_state(
        last_status="STOPPED",
        exit_code=0,
        stopped_at=dt.datetime(2024, 1, 3, tzinfo=dt.UTC),
    )

    record = runner_events.build_task_record(make_task(), "image:1", {"PREFECT__FLOW_RUN_ID": "run-1"}, state)

    assert record["task_arn"] == TASK_ARN
    assert record["cluster_arn"] == CLUSTER_ARN
    assert record["task_definition_arn"] == TASK_DEFINITION_ARN
    assert record["image"] == "image:1"
    assert record["image_digest"] == DIGEST
    assert record["exit_code"] == 0
    assert record["flow_run_id"] == "run-1"
    assert record["started_at"] == "2024-01-02T03:04:07.000Z"
    assert record["stopped_at"] == "2024-01-03T00:00:00.000Z"


def test_task_record_without_flow_run() -> None:
    record = runner_events.build_task_record(make_task(), "image:1", {}, make_state())

    assert record["flow_run_id"] is None


# Runner helpers


def test_settings_reject_remote_endpoint() -> None:
    with pytest.raises(runner.SettingsError, match="not a loopback address"):
        runner.RunnerSettings.from_environment({"AWS_ENDPOINT_URL": "https://ecs.amazonaws.com"})


def test_settings_require_endpoint() -> None:
    with pytest.raises(runner.SettingsError, match="AWS_ENDPOINT_URL is missing"):
        runner.RunnerSettings.from_environment({})


def test_settings_from_environment() -> None:
    settings = runner.RunnerSettings.from_environment(
        {
            "AWS_ENDPOINT_URL": "http://127.0.0.1:5001",
            "AWS_DEFAULT_REGION": "eu-west-1",
            "DEVSTACK_STATE_DIR": "/tmp/state",
            "DEVSTACK_RUNNER_CLUSTERS": "dev, other",
            "DEVSTACK_RUNNER_POLL_INTERVAL": "0.5",
        }
    )

    assert settings.region == "eu-west-1"
    assert settings.state_dir == Path("/tmp/state")
    assert settings.poll_interval_seconds == 0.5
    assert settings.serves_cluster(CLUSTER_ARN)
    assert not settings.serves_cluster("arn:aws:ecs:us-east-1:123456789012:cluster/prod")


def test_settings_reject_invalid_interval() -> None:
    with pytest.raises(runner.SettingsError, match="DEVSTACK_RUNNER_POLL_INTERVAL"):
        runner.RunnerSettings.from_environment(
            {
                "AWS_ENDPOINT_URL": "http://127.0.0.1:5001",
                "DEVSTACK_RUNNER_POLL_INTERVAL": "soon",
            }
        )


def test_decode_ecr_token() -> None:
    token = base64.b64encode(b"AWS:123456789012-auth-token").decode()

    assert runner.decode_ecr_token(token) == {
        "username": "AWS",
        "password": "123456789012-auth-token",
    }


def test_secret_masker() -> None:
    masker = runner.SecretMasker(["hunter22", "abc", "line-one\nline-two"])

    assert masker.mask("password is hunter22!") == "password is ****!"
    assert masker.mask("abc is too short to mask") == "abc is too short to mask"
    assert masker.mask("got line-two") == "got ****"


def test_task_arn_cluster() -> None:
    short_format = "arn:aws:ecs:us-east-1:123456789012:task/0123456789abcdef"

    assert runner.task_arn_cluster(TASK_ARN) == "dev"
    assert runner.task_arn_cluster(short_format) is None


def test_short_task_id() -> None:
    assert runner.short_task_id(TASK_ARN) == "01234567"


def test_call_aws_retries_transient_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 2:
            raise botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
        return "ok"

    monkeypatch.setattr(runner, "backoff_seconds", lambda attempt: 0.01)

    assert runner.call_aws("flaky call", flaky, threading.Event()) == "ok"
    assert len(attempts) == 2


def test_call_aws_raises_client_errors() -> None:
    error = botocore.exceptions.ClientError(
        {
            "Error": {"Code": "ClusterNotFoundException"},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        },
        "ListTasks",
    )

    def failing() -> None:
        raise error

    with pytest.raises(botocore.exceptions.ClientError):
        runner.call_aws("failing call", failing, threading.Event())


def test_call_aws_gives_up_after_max_attempts() -> None:
    calls: list[int] = []

    def down() -> None:
        calls.append(1)
        raise botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1")

    with pytest.raises(botocore.exceptions.EndpointConnectionError):
        runner.call_aws("down call", down, threading.Event(), max_attempts=1)
    assert len(calls) == 1


def test_backoff_is_bounded() -> None:
    assert runner.backoff_seconds(1) == 1
    assert runner.backoff_seconds(3) == 4
    assert runner.backoff_seconds(20) == runner.MAX_BACKOFF_SECONDS


def test_state_store_concurrent_records(tmp_path: Path) -> None:
    store = runner.StateStore(tmp_path)

    def write(index: int) -> None:
        store.mark_handled(f"arn:task/{index}")
        store.append_record({"task_arn": f"arn:task/{index}", "payload": "x" * 5000})

    threads = [threading.Thread(target=write, args=(index,)) for index in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    lines = (tmp_path / "runner" / "tasks.jsonl").read_text().splitlines()
    assert len(lines) == 20
    assert all(json.loads(line)["payload"] == "x" * 5000 for line in lines)
    assert store.load_finished() == {f"arn:task/{index}" for index in range(20)}
    assert store.load_handled() == {f"arn:task/{index}" for index in range(20)}
