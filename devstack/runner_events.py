"""Stop reasons, "ECS Task State Change" events and result records of the dev task runner.

Everything here is pure. The event detail follows the shape that the Amazon ECS Developer
Guide documents for task state change events delivered through EventBridge.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

EVENT_SOURCE = "aws.ecs"
EVENT_DETAIL_TYPE = "ECS Task State Change"

STOP_CODE_ESSENTIAL_CONTAINER_EXITED = "EssentialContainerExited"
STOP_CODE_TASK_FAILED_TO_START = "TaskFailedToStart"
STOP_CODE_USER_INITIATED = "UserInitiated"

CANNOT_PULL_CONTAINER_ERROR = "CannotPullContainerError"
CANNOT_START_CONTAINER_ERROR = "CannotStartContainerError"
RESOURCE_INITIALIZATION_ERROR = "ResourceInitializationError"
OUT_OF_MEMORY_REASON = "OutOfMemoryError: Container killed due to memory usage"

# StopTask accepts a reason of at most 255 characters.
MAX_STOP_REASON_LENGTH = 255


@dataclass
class TaskRunState:
    """Progress of one task: statuses, times, digest and exit code, filled in as it runs."""

    created_at: dt.datetime
    last_status: str = "PENDING"
    image_digest: str | None = None
    runtime_id: str | None = None
    pull_started_at: dt.datetime | None = None
    pull_stopped_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    stopped_at: dt.datetime | None = None
    exit_code: int | None = None
    oom_killed: bool = False
    stop_code: str | None = None
    stopped_reason: str | None = None
    error: str | None = None
    version: int = 0


def truncate_reason(reason: str) -> str:
    """Cut a stop reason to the length StopTask accepts."""
    if len(reason) <= MAX_STOP_REASON_LENGTH:
        return reason
    return reason[: MAX_STOP_REASON_LENGTH - 3] + "..."


def essential_container_exited_reason(container_name: str, exit_code: int | None) -> str:
    """Return the stop reason for a task whose essential container exited."""
    return f"Essential container in task exited (container '{container_name}' exit code {exit_code})"


def shutdown_stop_reason(container_name: str, exit_code: int | None) -> str:
    """Return the stop reason for a task that the runner stopped while shutting down."""
    return truncate_reason(
        f"Task stopped by the dev task runner on shutdown (container '{container_name}' exit code {exit_code})"
    )


def failed_to_start_reason(error_kind: str, message: str) -> str:
    """Return an ECS-style reason such as `CannotPullContainerError: <message>`."""
    return truncate_reason(f"{error_kind}: {' '.join(message.split())}")


def iso_timestamp(moment: dt.datetime | None) -> str | None:
    """Format a time as ECS events do: UTC with milliseconds, e.g. 2024-01-02T03:04:05.678Z."""
    if moment is None:
        return None
    utc = moment.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def find_task_container(task: dict[str, Any], container_name: str) -> dict[str, Any]:
    """Return the DescribeTasks entry of the named container, or an empty one."""
    for container in task.get("containers") or []:
        if container.get("name") == container_name:
            return dict(container)
    return {}


def build_container_detail(
    task: dict[str, Any], container_name: str, image: str, state: TaskRunState
) -> dict[str, Any]:
    """Build the `containers[]` entry of a task state change event."""
    described = find_task_container(task, container_name)
    container: dict[str, Any] = {
        "containerArn": described.get("containerArn"),
        "name": container_name,
        "image": image,
        "lastStatus": state.last_status,
        "taskArn": task.get("taskArn"),
        "networkInterfaces": described.get("networkInterfaces", []),
    }
    if state.image_digest:
        container["imageDigest"] = state.image_digest
    if state.runtime_id:
        container["runtimeId"] = state.runtime_id
    if state.exit_code is not None:
        container["exitCode"] = state.exit_code
    if state.oom_killed:
        container["reason"] = OUT_OF_MEMORY_REASON
    if described.get("cpu") is not None:
        container["cpu"] = described["cpu"]
    if described.get("memory") is not None:
        container["memory"] = described["memory"]
    return container


def build_task_state_change_detail(
    task: dict[str, Any],
    task_definition: dict[str, Any],
    container_name: str,
    image: str,
    state: TaskRunState,
) -> dict[str, Any]:
    """Build the `detail` of an "ECS Task State Change" event for the task's current state.

    `task` is the DescribeTasks entry and `task_definition` the DescribeTaskDefinition
    result. Task-level cpu and memory come from the overrides when set, else the task
    definition, as in ECS.
    """
    overrides = task.get("overrides") or {"containerOverrides": []}
    stopped = state.last_status == "STOPPED"
    detail: dict[str, Any] = {
        "clusterArn": task.get("clusterArn"),
        "taskArn": task.get("taskArn"),
        "taskDefinitionArn": task.get("taskDefinitionArn"),
        "lastStatus": state.last_status,
        "desiredStatus": "STOPPED" if stopped else task.get("desiredStatus", "RUNNING"),
        "group": task.get("group"),
        "startedBy": task.get("startedBy"),
        "launchType": task.get("launchType"),
        "cpu": str(overrides.get("cpu") or task.get("cpu") or task_definition.get("cpu") or ""),
        "memory": str(overrides.get("memory") or task.get("memory") or task_definition.get("memory") or ""),
        "overrides": overrides,
        "containers": [build_container_detail(task, container_name, image, state)],
        "createdAt": iso_timestamp(state.created_at),
        "pullStartedAt": iso_timestamp(state.pull_started_at),
        "pullStoppedAt": iso_timestamp(state.pull_stopped_at),
        "startedAt": iso_timestamp(state.started_at),
        "updatedAt": iso_timestamp(state.stopped_at or state.started_at or state.created_at),
        "version": state.version,
    }
    if task.get("platformVersion"):
        detail["platformVersion"] = task["platformVersion"]
    if stopped:
        detail["stopCode"] = state.stop_code
        detail["stoppedReason"] = state.stopped_reason
        detail["stoppingAt"] = iso_timestamp(state.stopped_at)
        detail["executionStoppedAt"] = iso_timestamp(state.stopped_at)
        detail["stoppedAt"] = iso_timestamp(state.stopped_at)
    return {key: value for key, value in detail.items() if value is not None}


def build_put_events_entry(detail: dict[str, Any], moment: dt.datetime) -> dict[str, Any]:
    """Wrap an event detail into a PutEvents entry for the default event bus."""
    return {
        "Source": EVENT_SOURCE,
        "DetailType": EVENT_DETAIL_TYPE,
        "Resources": [detail["taskArn"]],
        "Detail": json.dumps(detail, sort_keys=True, default=str),
        "Time": moment,
    }


def build_task_record(
    task: dict[str, Any], image: str, environment: dict[str, str], state: TaskRunState
) -> dict[str, Any]:
    """Build the tasks.jsonl record of a finished task.

    `flow_run_id` is the `PREFECT__FLOW_RUN_ID` variable of the container's effective
    environment, which is how the Prefect ECS worker passes the flow run to the container.
    """
    return {
        "task_arn": task.get("taskArn"),
        "cluster_arn": task.get("clusterArn"),
        "task_definition_arn": task.get("taskDefinitionArn"),
        "image": image,
        "image_digest": state.image_digest,
        "exit_code": state.exit_code,
        "flow_run_id": environment.get("PREFECT__FLOW_RUN_ID"),
        "started_at": iso_timestamp(state.started_at),
        "stopped_at": iso_timestamp(state.stopped_at),
        "stop_code": state.stop_code,
        "stopped_reason": state.stopped_reason,
        "error": state.error,
    }
