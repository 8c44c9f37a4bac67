"""Stopped ECS tasks explained: a task description from DescribeTasks, turned into what to do.

ECS reports why a task stopped in `stopCode`, `stoppedReason` and each container's `exitCode`
and `reason`. A stopped reason starts with an error name (`CannotPullContainerError: ...`,
`ResourceInitializationError: ...`), as the ECS developer guide's pages on stopped task errors
("Viewing Amazon ECS stopped task errors" and the troubleshooting page of each error) show
them. The error name is matched first, then its documented detail.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from meta_flows.aws.clients import aws_client
from meta_flows.aws.errors import describe_aws_failure

OUT_OF_MEMORY_EXIT_CODE = 137
ERROR_NAME_PATTERN = re.compile(r"^([A-Z][A-Za-z]+(?:Error|Exception)):\s*(.*)$", re.S)
# The dev task runner writes the exit code into the stopped reason, because the emulator
# (moto 5.2.5) always reports containers[].exitCode as 0. Real ECS reports the exit code in
# the container and only "Essential container in task exited" as the reason.
REASON_EXIT_CODE_PATTERN = re.compile(r"exit code (\d+)")


@dataclass(frozen=True)
class TaskFailure:
    """The cause of a stopped task, in ECS's words, and the fix a user can apply."""

    kind: str
    task_arn: str
    stopped_reason: str
    exit_code: int | None
    message: str


def split_error_name(reason: str) -> tuple[str | None, str]:
    """Split `CannotPullContainerError: detail` into the error name and the detail."""
    match = ERROR_NAME_PATTERN.match(reason.strip())
    if match is None:
        return None, reason.strip()
    return match.group(1), match.group(2).strip()


def essential_exit(task: dict[str, Any]) -> tuple[int | None, str]:
    """Return the first non-zero container exit code and that container's reason."""
    reason_code = REASON_EXIT_CODE_PATTERN.search(str(task.get("stoppedReason") or ""))
    for container in task.get("containers") or []:
        code = container.get("exitCode")
        if code not in (None, 0):
            return int(code), str(container.get("reason") or "")
        if str(container.get("reason") or "").startswith("OutOfMemoryError"):
            return OUT_OF_MEMORY_EXIT_CODE, str(container["reason"])
    if reason_code is not None and int(reason_code.group(1)) != 0:
        return int(reason_code.group(1)), ""
    return None, ""


def task_memory(task: dict[str, Any]) -> str:
    """Return the task's memory as ECS reports it, e.g. '2048 MiB', or 'its'."""
    memory = task.get("memory")
    return f"{memory} MiB" if memory else "its"


def memory_guidance(memory: str) -> str:
    """Return what to do when a flow used more memory than `memory` allows."""
    return (
        f"it used more memory than {memory} allows. Raise `memory` (and `container_memory`, if "
        "set) in the deployment's job variables in prefect.yaml, or META_FLOWS_MEMORY for every flow."
    )


def explain_pull_failure(task: dict[str, Any], detail: str) -> tuple[str, str]:
    image = ", ".join(str(c.get("image")) for c in task.get("containers") or [] if c.get("image")) or "the image"
    return "image-pull", (
        f"ECS could not pull {image}: {detail}. Check that the tag is in the repository "
        "(redeploy with deploy-flow, or roll back to a kept version), that the execution role "
        "may call ecr:GetAuthorizationToken, ecr:BatchGetImage and ecr:GetDownloadUrlForLayer, "
        "and that the task's subnets reach ECR (a public IP, a NAT gateway or VPC endpoints)."
    )


def explain_resource_initialization(detail: str) -> tuple[str, str]:
    # ECS uses this one error name for secrets, the log group and the network; only the
    # documented detail text tells them apart.
    lowered = detail.lower()
    if "secret" in lowered or "ssm" in lowered or "parameter" in lowered:
        return "secrets", (
            f"ECS could not fetch the task's secrets: {detail}. Check that each secret ARN in "
            "the job variables exists in this region, and that the execution role may call "
            "secretsmanager:GetSecretValue or ssm:GetParameters (and kms:Decrypt for a "
            "customer-managed key)."
        )
    if "log" in lowered:
        return "log-group", (
            f"ECS could not set up the task's logging: {detail}. Create the CloudWatch log "
            "group named in the job variables, or set configure_cloudwatch_logs so the worker "
            "creates it, and check that the execution role may call logs:CreateLogStream and "
            "logs:PutLogEvents."
        )
    return "resource-initialization", (
        f"ECS could not initialise the task's resources: {detail}. Check the execution role's "
        "permissions and that the task's subnets reach the AWS services it needs."
    )


def is_stopped(task: dict[str, Any]) -> bool:
    """Return True once ECS has stopped the task.

    Both statuses are checked: moto 5.2.5 moves `lastStatus` one step towards STOPPED on every
    DescribeTasks call, while `desiredStatus` changes only on StopTask. On ECS a task whose
    `lastStatus` is STOPPED always has `desiredStatus` STOPPED too.
    """
    return task.get("lastStatus") == "STOPPED" and task.get("desiredStatus") == "STOPPED"


def explain_stopped_task(task: dict[str, Any]) -> TaskFailure | None:
    """Explain why a STOPPED task failed; None when it is not stopped or exited cleanly."""
    if not is_stopped(task):
        return None
    reason = str(task.get("stoppedReason") or "")
    error_name, detail = split_error_name(reason)
    exit_code, container_reason = essential_exit(task)
    kind, message = _classify(task, reason, error_name, detail, exit_code, container_reason)
    if kind is None:
        return None
    return TaskFailure(
        kind=kind, task_arn=str(task.get("taskArn")), stopped_reason=reason, exit_code=exit_code, message=message
    )


def _classify(
    task: dict[str, Any],
    reason: str,
    error_name: str | None,
    detail: str,
    exit_code: int | None,
    container_reason: str,
) -> tuple[str | None, str]:
    if error_name == "CannotPullContainerError":
        return explain_pull_failure(task, detail)
    if error_name == "ResourceInitializationError":
        return explain_resource_initialization(detail)
    if error_name == "CannotStartContainerError":
        return "container-start", (
            f"ECS pulled the image but could not start its container: {detail}. Check the "
            "image's entrypoint and the command in the job variables."
        )
    if exit_code == OUT_OF_MEMORY_EXIT_CODE:
        cause = container_reason or reason
        return "out-of-memory", (
            f"The flow's container was killed with exit code 137 ({cause}): {memory_guidance(task_memory(task))}"
        )
    if task.get("stopCode") == "TaskFailedToStart" or error_name is not None:
        return "failed-to-start", (
            f"The task failed to start: {reason}. Check the cluster's capacity, the subnets and "
            "security groups, and the roles named in the work pool."
        )
    if exit_code is not None:
        return "exit-code", (
            f"The flow's container exited with code {exit_code} ({reason}): read the flow run's "
            "logs, or the task's CloudWatch log stream, for the error."
        )
    return None, ""


def describe_task(region: str, cluster: str, task_arn: str) -> dict[str, Any] | None:
    """Return the task's description from ecs:DescribeTasks, or None when ECS no longer returns it."""
    try:
        reply = aws_client("ecs", region).describe_tasks(cluster=cluster, tasks=[task_arn])
    except (ClientError, BotoCoreError) as exc:
        raise describe_aws_failure("ecs:DescribeTasks", exc) from exc
    tasks = reply.get("tasks") or []
    return dict(tasks[0]) if tasks else None


def parse_infrastructure_pid(infrastructure_pid: str | None) -> tuple[str, str] | None:
    """Split the ECS worker's flow run identifier `<cluster>::<task ARN>` into its two parts."""
    if not infrastructure_pid or "::" not in infrastructure_pid:
        return None
    cluster, _, task_arn = infrastructure_pid.partition("::")
    return cluster, task_arn
