"""Flow "deploy-all-flows": every flow of flows/ built, pushed and registered in one flow run.

Each flow is one task, not a subflow: a subflow costs about a second of Prefect bookkeeping,
a task little. At most `concurrency` flows are in progress at once, so builds and pushes
overlap in the Docker engine. The run holds the deploy locks of all its flows from start to
end, so a deploy-flow run of one of them waits for it. A flow that fails leaves the others running, and the summary
artifact names each failed flow and its error.

Start it from the UI, with `prefect deployment run 'deploy-all-flows/default'`, or locally with
`python -m meta_flows.deploy_all [--concurrency N] [FLOW ...]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import acreate_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import WorkPool
from prefect.context import SyncClientContext
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel

from meta_flows.aws.clients import aws_client
from meta_flows.build_image import ImageTarget, build_and_push, format_bytes, prepare_image_target
from meta_flows.deploy_lock import deploy_locks
from meta_flows.errors import MetaFlowsError
from meta_flows.preflight import read_ecs_pool
from meta_flows.project import list_flow_folders, validate_flow_folder
from meta_flows.register import register
from meta_flows.settings import load_settings

MAX_CONCURRENCY = 32
DEFAULT_CONCURRENCY = 4


class FlowOutcome(BaseModel):
    """Outcome of deploying one flow: its image and deployment, or the error that stopped it."""

    flow: str
    status: Literal["deployed", "failed"]
    image: str = ""
    pushed: bool = False
    bytes_pushed: int = 0
    deployment: str = ""
    deployment_action: str = ""
    error: str = ""
    seconds: float = 0.0


class DeployAllFailed(MetaFlowsError):
    """Some flows failed to deploy; the message is the summary table."""


@task(name="deploy-one-flow", task_run_name="deploy-{flow}", cache_policy=NO_CACHE)
def deploy_one_flow(flow: str, target: ImageTarget, pool: WorkPool) -> FlowOutcome:
    """Build, push and register one flow; a failure becomes a `failed` outcome with its reason."""
    started = time.monotonic()
    logger = get_run_logger()
    try:
        image = build_and_push(flow, target, artifact=False)
        deployment = register(flow, image.uri, artifact=False, pool=pool)
    except MetaFlowsError as exc:
        logger.error("Deploying %s failed: %s", flow, exc)
        return FlowOutcome(flow=flow, status="failed", error=str(exc), seconds=round(time.monotonic() - started, 2))
    return FlowOutcome(
        flow=flow,
        status="deployed",
        image=image.uri,
        pushed=image.pushed,
        bytes_pushed=image.bytes_pushed,
        deployment=deployment.full_name,
        deployment_action=deployment.action,
        seconds=round(time.monotonic() - started, 2),
    )


def load_shared_parts(region: str) -> None:
    """Create the ECS and ECR clients every flow uses, once, beside the lock acquisition.

    botocore loads each service's model on first use; done here, the first flows' threads do
    not wait for one another to load it. A failure here is left for the flows themselves to
    report. prefect-aws is not imported here: only a flow whose task definition family is new
    renders with it (meta_flows/task_definitions.py).
    """
    try:
        aws_client("ecs", region)
        aws_client("ecr", region)
    except Exception as exc:  # noqa: BLE001 - each flow raises the same error with its context
        logging.getLogger(__name__).debug("creating the AWS clients failed: %s", exc)


def validate_concurrency(concurrency: int) -> int:
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise MetaFlowsError(
            f"concurrency {concurrency} is out of range: use 1 to {MAX_CONCURRENCY} flows deployed at once"
        )
    return concurrency


def select_flows(flows: list[str] | None) -> list[str]:
    """Return the flow folders to deploy, all of flows/ when none are named; validates each."""
    root = load_settings().project_root
    selected = list(dict.fromkeys(flows)) if flows else list_flow_folders(root)
    for name in selected:
        validate_flow_folder(root, name)
    if not selected:
        raise MetaFlowsError(f"no flow folders found in {root / 'flows'}: add one, or name the flows to deploy")
    return selected


def outcome_of(flow_name: str, future: PrefectFuture[FlowOutcome]) -> FlowOutcome:
    """Return the task's outcome; a crash outside MetaFlowsError also becomes a failed outcome."""
    state = future.wait() or future.state
    if state.is_completed():
        return future.result()
    return FlowOutcome(flow=flow_name, status="failed", error=state.message or state.name or "task did not complete")


@flow(name="deploy-all-flows")
async def deploy_all_flows(flows: list[str] | None = None, concurrency: int = DEFAULT_CONCURRENCY) -> list[FlowOutcome]:
    """Deploy every flow of flows/ (or the named ones), at most `concurrency` at a time.

    Args:
        flows: Folders of flows/ to deploy; all of them when empty.
        concurrency: How many flows are built, pushed and registered at once (1 to 32).
    """
    # The work blocks (Docker, boto3, the sync Prefect client), so it runs in a thread of its own.
    # The flow is async all the same: at a flow run's end, Prefect's sync engine waits for its
    # heartbeat thread, which sleeps in steps of one second, so every sync run ends 0 to 1 s late.
    outcomes = await asyncio.to_thread(deploy_all_in_thread, flows, concurrency)
    # Here, not in the thread: in an async flow's context, Prefect's dual sync/async functions
    # such as create_markdown_artifact pick their async form, even when called from a thread.
    summary = render_summary_markdown(outcomes)
    await acreate_markdown_artifact(key="deploy-all-flows", markdown=summary, description="Deploy of every flow")
    failed = [o for o in outcomes if o.status == "failed"]
    get_run_logger().info("Deployed %d of %d flows", len(outcomes) - len(failed), len(outcomes))
    if failed:
        raise DeployAllFailed(render_summary_text(outcomes))
    return outcomes


def deploy_all_in_thread(flows: list[str] | None, concurrency: int) -> list[FlowOutcome]:
    """Run the body of deploy-all-flows in this thread, with one sync Prefect client for all of it.

    asyncio.to_thread copies the flow run's context into the thread, and the task runner copies
    it into each task. Without a sync client in that context, every task would open a client of
    its own, which costs tens of milliseconds of CPU each (mostly its TLS context).
    """
    with SyncClientContext.get_or_create():
        return deploy_all_body(flows, concurrency)


def deploy_all_body(flows: list[str] | None, concurrency: int) -> list[FlowOutcome]:
    logger = get_run_logger()
    validate_concurrency(concurrency)
    selected = select_flows(flows)
    logger.info("Deploying %d flows, %d at a time: %s", len(selected), concurrency, ", ".join(selected))

    settings = load_settings()
    with get_client(sync_client=True) as client:
        pool = read_ecs_pool(client, settings.work_pool)

    # The look-ups every flow shares only read, so they run beside the lock request. The same
    # locks as deploy-flow's, so a deploy-flow run of one of these flows waits for this run, and
    # the reverse. All are taken at once, in one request.
    repositories = [settings.repository_name(name) for name in selected]
    runner: Any
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="deploy-all-prepare") as preparing:
        warm_up = preparing.submit(contextvars.copy_context().run, load_shared_parts, settings.aws_region)
        preparing_target = preparing.submit(contextvars.copy_context().run, prepare_image_target, settings)
        with deploy_locks(repositories), ThreadPoolTaskRunner(max_workers=concurrency) as runner:
            target = preparing_target.result()
            warm_up.result()
            parameters = {"target": target, "pool": pool}
            futures: list[tuple[str, PrefectFuture[FlowOutcome]]] = [
                (name, runner.submit(deploy_one_flow, parameters={"flow": name, **parameters})) for name in selected
            ]
            outcomes = [outcome_of(name, future) for name, future in futures]

    return outcomes


def render_summary_markdown(outcomes: list[FlowOutcome]) -> str:
    """Render the summary artifact: one row per flow, failures first, with the error."""
    ordered = sorted(outcomes, key=lambda o: (o.status != "failed", o.flow))
    failed = sum(o.status == "failed" for o in outcomes)
    lines = [
        "# Deploy of every flow",
        "",
        f"{len(outcomes) - failed} deployed, {failed} failed.",
        "",
        "| flow | status | image | pushed | deployment | seconds | error |",
        "|---|---|---|---|---|---|---|",
    ]
    for o in ordered:
        if o.pushed:
            pushed = format_bytes(o.bytes_pushed)
        elif o.status == "deployed":
            pushed = "no (unchanged)"
        else:
            pushed = "-"
        deployment = f"{o.deployment} ({o.deployment_action})" if o.deployment else "-"
        error = o.error.replace("|", "\\|").replace("\n", " ") or "-"
        image = f"`{o.image}`" if o.image else "-"
        lines.append(f"| {o.flow} | {o.status} | {image} | {pushed} | {deployment} | {o.seconds} | {error} |")
    return "\n".join(lines)


def render_summary_text(outcomes: list[FlowOutcome]) -> str:
    """Render the summary for a terminal: one line per flow, the error's first line when failed."""
    width = max(len(o.flow) for o in outcomes)
    lines = []
    for o in sorted(outcomes, key=lambda o: o.flow):
        if o.status == "failed":
            detail = o.error.splitlines()[0] if o.error else ""
        else:
            pushed = f"pushed {format_bytes(o.bytes_pushed)}" if o.pushed else "image unchanged"
            detail = f"{pushed}, deployment {o.deployment} {o.deployment_action}"
        lines.append(f"{o.flow:<{width}}  {o.status:<8}  {detail}")
    failed = sum(o.status == "failed" for o in outcomes)
    lines.append(f"{len(outcomes) - failed} deployed, {failed} failed")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m meta_flows.deploy_all",
        description="Build, push and register every flow of flows/ (or the named ones) in one flow run.",
    )
    parser.add_argument("flows", nargs="*", help="folders of flows/ to deploy; all when none are given")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help=f"flows deployed at once, 1 to {MAX_CONCURRENCY} (default {DEFAULT_CONCURRENCY})",
    )
    args = parser.parse_args(argv)
    try:
        outcomes = asyncio.run(deploy_all_flows(flows=args.flows or None, concurrency=args.concurrency))
    except DeployAllFailed as exc:
        print(str(exc))
        return 1
    except MetaFlowsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(render_summary_text(outcomes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
