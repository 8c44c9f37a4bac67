"""Flow "smoke-run": run a deployment once and wait for it, explaining an ECS failure.

The ECS worker of prefect-aws 0.7 does not watch the tasks it starts: crash detection needs
its SQS observer, which may be missing. So the smoke run watches both the flow run and the ECS
task. The worker stores the task as the flow run's `infrastructure_pid` (`<cluster>::<task
ARN>`), and ecs:DescribeTasks reports when and why the task stopped. A task that stopped while the
flow run never reached a final state failed outside the flow (image pull, secrets, memory).
The flow run is then marked Crashed with the explanation, which the UI shows.
"""

from __future__ import annotations

import re
import time
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import FlowRun
from prefect.settings import get_current_settings
from prefect.states import Cancelling, Crashed
from pydantic import BaseModel

from meta_flows.aws.task_failures import (
    TaskFailure,
    describe_task,
    explain_stopped_task,
    is_stopped,
    memory_guidance,
    parse_infrastructure_pid,
    task_memory,
)
from meta_flows.errors import MetaFlowsError
from meta_flows.prefect_api import check_prefect_api
from meta_flows.settings import load_settings

POLL_SECONDS = 2.0
# Prefect 3.9's runner ends a flow run whose process died from a signal with the state message
# "Process exited with status code: -9 ..." (negative signal number), so -9 means SIGKILL.
SIGKILL_MESSAGE = re.compile(r"status code: (-9|137)\b")
DEFAULT_TIMEOUT_SECONDS = 600.0


class SmokeRunError(MetaFlowsError):
    """The smoke run failed, crashed or timed out; the message gives the cause and the fix."""


class SmokeResult(BaseModel):
    """The smoke run's flow run, its final state, and the ECS task that ran it."""

    deployment: str
    flow_run_id: UUID
    url: str
    state: str
    seconds: float
    task_arn: str | None = None
    stopped_reason: str | None = None
    failure: str | None = None


def flow_run_url(flow_run_id: UUID) -> str:
    """Return the UI link of a flow run."""
    settings = get_current_settings()
    base = settings.ui_url or str(settings.api.url or "").removesuffix("/api")
    return f"{base.rstrip('/')}/runs/flow-run/{flow_run_id}"


def stopped_task(region: str, flow_run: FlowRun) -> dict[str, Any] | None:
    """Return the flow run's ECS task once it is STOPPED; None while it runs or before it exists."""
    identifier = parse_infrastructure_pid(flow_run.infrastructure_pid)
    if identifier is None:
        return None
    task = describe_task(region, *identifier)
    if task is None or not is_stopped(task):
        return None
    return task


def wait_for_flow_run(
    client: SyncPrefectClient, region: str, flow_run_id: UUID, timeout: float
) -> tuple[FlowRun, dict[str, Any] | None]:
    """Poll until the flow run is final or its ECS task stopped; return the run and the stopped task."""
    deadline = time.monotonic() + timeout
    while True:
        flow_run = client.read_flow_run(flow_run_id)
        if flow_run.state is not None and flow_run.state.is_final():
            return flow_run, None
        task = stopped_task(region, flow_run)
        if task is not None:
            # The container reports the final state before it exits, so read the run once more.
            return client.read_flow_run(flow_run_id), task
        if time.monotonic() >= deadline:
            return flow_run, None
        time.sleep(POLL_SECONDS)


def explain_final_state(state_message: str, task: dict[str, Any] | None) -> str:
    """Explain a failed or crashed flow run from its ECS task, or from a SIGKILL in its state message."""
    failure = explain_stopped_task(task) if task is not None else None
    if failure is not None:
        return f"{state_message} {failure.message}".strip()
    if SIGKILL_MESSAGE.search(state_message):
        memory = task_memory(task) if task is not None else "its"
        return f"{state_message} The flow's process was killed (SIGKILL), most likely because {memory_guidance(memory)}"
    return f"{state_message or 'no message'}. Read the flow run's logs for the error."


def failure_without_final_state(task: dict[str, Any]) -> TaskFailure:
    """Explain a task that stopped although the flow run never finished."""
    failure = explain_stopped_task(task)
    if failure is not None:
        return failure
    reason = str(task.get("stoppedReason") or "no reason given")
    return TaskFailure(
        kind="stopped",
        task_arn=str(task.get("taskArn")),
        stopped_reason=reason,
        exit_code=None,
        message=f"The ECS task stopped ({reason}) before the flow run reported a final state.",
    )


@flow(name="smoke-run")
def smoke_run(
    deployment_id: UUID, parameters: dict[str, Any], timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
) -> SmokeResult:
    """Run the deployment once with `parameters` and wait for it, at most `timeout_seconds`.

    Args:
        deployment_id: The deployment to run.
        parameters: Parameters of the run; the deployment's defaults fill in the rest.
        timeout_seconds: How long to wait for a final state before giving up.
    """
    logger = get_run_logger()
    settings = load_settings()
    started = time.monotonic()
    with get_client(sync_client=True) as client:
        check_prefect_api(client)
        deployment = client.read_deployment(deployment_id)
        full_name = f"{client.read_flow(deployment.flow_id).name}/{deployment.name}"
        created = client.create_flow_run_from_deployment(deployment_id, parameters=parameters, tags=["smoke-run"])
        url = flow_run_url(created.id)
        logger.info("Smoke run %s of %s started: %s", created.name, full_name, url)
        flow_run, task = wait_for_flow_run(client, settings.aws_region, created.id, timeout_seconds)
        if task is None and flow_run.state is not None and flow_run.state.is_final():
            # A failed run may still have an ECS explanation (the observer can mark it Crashed first).
            task = stopped_task(settings.aws_region, flow_run) if not flow_run.state.is_completed() else None
        result, failure = judge(client, flow_run, task, url, time.monotonic() - started, timeout_seconds)
        result.deployment = full_name

    create_markdown_artifact(
        key="smoke-run", markdown=render_smoke_markdown(result), description="Result of the smoke run"
    )
    if failure is not None:
        raise SmokeRunError(failure)
    logger.info("Smoke run completed in %.1f s: %s", result.seconds, url)
    return result


def judge(
    client: SyncPrefectClient,
    flow_run: FlowRun,
    task: dict[str, Any] | None,
    url: str,
    seconds: float,
    timeout: float,
) -> tuple[SmokeResult, str | None]:
    """Decide the smoke run's outcome; mark a run whose task died as Crashed, and cancel a late one."""
    state = flow_run.state
    state_name = (state.name if state is not None else None) or "unknown"
    result = SmokeResult(deployment="", flow_run_id=flow_run.id, url=url, state=state_name, seconds=round(seconds, 1))
    if state is not None and state.is_completed():
        return result, None
    if state is not None and state.is_final():
        message = f"smoke run ended {state_name}: {explain_final_state(state.message or '', task)}; see {url}"
        update = {"failure": message, "task_arn": task.get("taskArn") if task else None}
        update["stopped_reason"] = task.get("stoppedReason") if task else None
        return result.model_copy(update=update), message
    if task is not None:
        failure = failure_without_final_state(task)
        client.set_flow_run_state(flow_run.id, Crashed(message=failure.message), force=True)
        message = f"smoke run crashed: {failure.message} (ECS task {failure.task_arn}; see {url})"
        update = {
            "state": "Crashed",
            "failure": message,
            "task_arn": failure.task_arn,
            "stopped_reason": failure.stopped_reason,
        }
        return result.model_copy(update=update), message
    client.set_flow_run_state(flow_run.id, Cancelling(message=f"smoke run timed out after {timeout:.0f} s"), force=True)
    message = (
        f"smoke run not finished after {timeout:.0f} s (state {state_name}); it was cancelled. Check "
        f"that an ECS worker serves the pool, or raise smoke_timeout; see {url}"
    )
    return result.model_copy(update={"failure": message}), message


def render_smoke_markdown(result: SmokeResult) -> str:
    """Render the smoke run artifact."""
    rows = [
        ("deployment", f"`{result.deployment}`"),
        ("flow run", f"[{result.url}]({result.url})"),
        ("final state", result.state),
        ("seconds", str(result.seconds)),
        ("ECS task", f"`{result.task_arn}`" if result.task_arn else "-"),
        ("stopped reason", result.stopped_reason or "-"),
        ("what to do", result.failure or "nothing: the run completed"),
    ]
    lines = ["# Smoke run", "", "| field | value |", "|---|---|"]
    lines += [f"| {name} | {value.replace('|', '/')} |" for name, value in rows]
    return "\n".join(lines)
