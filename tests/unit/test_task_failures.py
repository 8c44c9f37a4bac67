"""The mapping of stopped ECS tasks to guidance, on task descriptions shaped as DescribeTasks returns them.

The stopped reasons follow the ECS developer guide's pages on stopped task errors. The last
cases are shaped as the local stack's emulator returns them.
"""

from __future__ import annotations

from typing import Any

import pytest

from meta_flows.aws.task_failures import explain_stopped_task, parse_infrastructure_pid, split_error_name
from meta_flows.smoke import explain_final_state

TASK_ARN = "arn:aws:ecs:us-east-1:123456789012:task/prefect-flows/0f9c2b7e5d8a4c1e9b3a6d2f7e1c4b8a"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/prefect-flows/hello:3f9a1c2b4d5e6f70"


def stopped_task(stop_code: str, stopped_reason: str, **container: Any) -> dict[str, Any]:
    return {
        "taskArn": TASK_ARN,
        "lastStatus": "STOPPED",
        "desiredStatus": "STOPPED",
        "stopCode": stop_code,
        "stoppedReason": stopped_reason,
        "memory": "2048",
        "containers": [{"name": "prefect", "image": IMAGE, "lastStatus": "STOPPED", **container}],
    }


def test_pull_failure_names_image_and_fixes() -> None:
    reason = (
        "CannotPullContainerError: pull image manifest has been retried 5 time(s): failed to resolve "
        f"ref {IMAGE}: {IMAGE}: not found"
    )
    failure = explain_stopped_task(stopped_task("TaskFailedToStart", reason, reason=reason))

    assert failure is not None
    assert failure.kind == "image-pull"
    assert f"ECS could not pull {IMAGE}" in failure.message
    assert "ecr:BatchGetImage" in failure.message
    assert "redeploy with deploy-flow" in failure.message


def test_secrets_initialization_failure_names_permission() -> None:
    reason = (
        "ResourceInitializationError: unable to pull secrets or registry auth: execution resource "
        "retrieval failed: unable to retrieve secret from asm: service call has been retried 1 "
        "time(s): failed to fetch secret arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf "
        "from secrets manager: AccessDeniedException"
    )
    failure = explain_stopped_task(stopped_task("TaskFailedToStart", reason))

    assert failure is not None
    assert failure.kind == "secrets"
    assert "secretsmanager:GetSecretValue" in failure.message
    assert "secret:db-AbCdEf" in failure.message


def test_log_group_initialization_failure_says_create_group() -> None:
    reason = (
        "ResourceInitializationError: failed to validate logger args: create stream has been retried "
        "1 times: failed to create Cloudwatch log stream: ResourceNotFoundException: The specified log "
        "group does not exist. : exit status 1"
    )
    failure = explain_stopped_task(stopped_task("TaskFailedToStart", reason))

    assert failure is not None
    assert failure.kind == "log-group"
    assert "Create the CloudWatch log group" in failure.message


def test_out_of_memory_exit_names_memory_setting() -> None:
    task = stopped_task(
        "EssentialContainerExited",
        "Essential container in task exited",
        exitCode=137,
        reason="OutOfMemoryError: Container killed due to memory usage",
    )

    failure = explain_stopped_task(task)

    assert failure is not None
    assert failure.kind == "out-of-memory"
    assert failure.exit_code == 137
    assert "2048 MiB" in failure.message
    assert "Raise `memory`" in failure.message


def test_task_failed_to_start_without_error_name() -> None:
    reason = "Timeout waiting for network interface provisioning to complete."

    failure = explain_stopped_task(stopped_task("TaskFailedToStart", reason))

    assert failure is not None
    assert failure.kind == "failed-to-start"
    assert reason in failure.message


def test_cannot_start_container_points_at_command() -> None:
    reason = (
        'CannotStartContainerError: Error response from daemon: failed to create shim task: exec: "prefect": not found'
    )

    failure = explain_stopped_task(stopped_task("TaskFailedToStart", reason))

    assert failure is not None
    assert failure.kind == "container-start"


def test_nonzero_exit_points_at_logs() -> None:
    failure = explain_stopped_task(
        stopped_task("EssentialContainerExited", "Essential container in task exited", exitCode=1)
    )

    assert failure is not None
    assert failure.kind == "exit-code"
    assert failure.exit_code == 1


@pytest.mark.parametrize(
    "task",
    [
        stopped_task("EssentialContainerExited", "Essential container in task exited", exitCode=0),
        {"taskArn": TASK_ARN, "lastStatus": "RUNNING", "containers": []},
    ],
)
def test_clean_or_running_task_passes(task: dict[str, Any]) -> None:
    assert explain_stopped_task(task) is None


def test_emulator_reason_exit_code_oom() -> None:
    # moto reports exitCode 0 for every container; the dev runner puts the real code in the reason.
    task = stopped_task(
        "EssentialContainerExited", "Essential container in task exited (container 'prefect' exit code 137)", exitCode=0
    )

    failure = explain_stopped_task(task)

    assert failure is not None
    assert failure.kind == "out-of-memory"


def test_emulator_pull_failure_without_stop_code() -> None:
    task = stopped_task("", "CannotPullContainerError: 127.0.0.1:5000/e2e/hello:missing: manifest unknown", exitCode=0)
    del task["stopCode"]

    failure = explain_stopped_task(task)

    assert failure is not None
    assert failure.kind == "image-pull"


def test_split_error_name_without_name_keeps_text() -> None:
    assert split_error_name("Task stopped by user") == (None, "Task stopped by user")
    assert split_error_name("CannotPullContainerError: x") == ("CannotPullContainerError", "x")


def test_parse_infrastructure_pid_splits_cluster_and_task() -> None:
    assert parse_infrastructure_pid(f"prefect-flows::{TASK_ARN}") == ("prefect-flows", TASK_ARN)
    assert parse_infrastructure_pid(None) is None
    assert parse_infrastructure_pid("12345") is None


def test_emulator_last_status_alone_is_not_stopped() -> None:
    # moto advances lastStatus on every DescribeTasks call; only StopTask sets desiredStatus.
    task = {"taskArn": TASK_ARN, "lastStatus": "STOPPED", "desiredStatus": "RUNNING", "stoppedReason": ""}

    assert explain_stopped_task(task) is None


def test_sigkill_state_message_gets_memory_guidance() -> None:
    message = "Process exited with status code: -9. Process exited due to a SIGKILL signal."

    explanation = explain_final_state(message, None)

    assert explanation.startswith(message)
    assert "most likely because it used more memory" in explanation
    assert "Raise `memory`" in explanation


def test_final_state_prefers_task_explanation() -> None:
    task = stopped_task("EssentialContainerExited", "Essential container in task exited", exitCode=137)

    explanation = explain_final_state("Flow run crashed.", task)

    assert "killed with exit code 137" in explanation


def test_other_final_state_points_at_logs() -> None:
    assert "Read the flow run's logs" in explain_final_state("ValueError: bad input", None)
