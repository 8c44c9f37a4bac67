"""Flow "register-deployment": the Prefect deployment of one flow on the ECS work pool.

It comes from the flow's entry in prefect.yaml plus the image. The flow's parameter schema is
read from its source, so the deployer needs none of the flow's own dependencies installed.
It computes the differences against the server's copy first; `dry_run=True` stops there. Each
applied version is kept in the deployment's history, for rollback-deployment.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import WorkPool
from prefect.runtime import flow_run as prefect_runtime_flow_run

from meta_flows import history
from meta_flows.aws import ecr
from meta_flows.deployment_plan import apply_plan, plan_deployment
from meta_flows.deployments import AppliedDeployment, DesiredDeployment, build_desired
from meta_flows.diff import render_changes_markdown
from meta_flows.errors import SettingsError
from meta_flows.images.dockerfile import flow_workdir
from meta_flows.pool_template import validate_job_variables
from meta_flows.preflight import read_ecs_pool
from meta_flows.project import find_flow_spec
from meta_flows.settings import load_settings
from meta_flows.task_definitions import ensure_task_definition, family_for, needs_deployment_id, render_task_definition

IMAGE_PATTERN = re.compile(r"^[a-z0-9.:\[\]-]+(?:/[a-z0-9._-]+)+(?::[A-Za-z0-9_.-]{1,128}|@sha256:[a-f0-9]{64})$")


def image_version(image: str) -> str:
    """Return the image's tag, or its digest, as the deployment version."""
    if "@" in image:
        return image.rpartition("@")[2]
    return image.rpartition(":")[2]


@flow(name="register-deployment")
def register_deployment(flow: str, image: str, dry_run: bool = False) -> AppliedDeployment:
    """Create or update the deployment of flows/<flow> on the ECS pool, running `image`.

    Args:
        flow: Folder of flows/ to register.
        image: Image address with tag or digest, as build-and-push-image returns it.
        dry_run: Compute and show the differences only; write nothing.
    """
    return register(flow, image, dry_run=dry_run)


def register(
    flow: str, image: str, dry_run: bool = False, artifact: bool = True, pool: WorkPool | None = None
) -> AppliedDeployment:
    """Register one flow's deployment inside the current flow or task run.

    deploy-all-flows calls this from its tasks, since a subflow per flow costs about a second.
    It leaves out the per-deployment artifact, because its summary artifact lists every one. It
    also passes the ECS work pool it read once with `read_ecs_pool`. Without `pool`, the pool is
    read here.
    """
    logger = get_run_logger()
    settings = load_settings()
    if not IMAGE_PATTERN.match(image):
        raise SettingsError(
            f"image {image!r} is not an image address <registry>/<repository>:<tag>; pass the uri "
            "that build-and-push-image returned"
        )
    spec = find_flow_spec(settings.project_root, flow)
    flow_prefix = f"flows/{flow}/"
    entrypoint = f"{PurePosixPath(spec.entrypoint_path).relative_to(flow_prefix)}:{spec.function_name}"

    with get_client(sync_client=True) as client:
        if pool is None:
            pool = read_ecs_pool(client, settings.work_pool)
        validate_job_variables(spec.name, spec.job_variables, pool.base_job_template)
        job_variables = {**spec.job_variables, "image": image}
        desired = build_desired(
            settings.project_root,
            spec,
            entrypoint=entrypoint,
            work_pool_name=settings.work_pool,
            work_queue_name=settings.work_queue,
            working_directory=flow_workdir(flow),
            job_variables=job_variables,
            version=image_version(image),
        )
        prepare_task_definition(settings.work_pool, pool, desired, settings.aws_region, dry_run)
        plan = plan_deployment(client, desired)
        if plan.changes:
            logger.info("Changes against %s: %s", desired.full_name, ", ".join(c.path for c in plan.changes))
        for change in plan.changes:
            logger.debug("%s: %s -> %s", change.path, change.before, change.after)
        applied = apply_plan(client, plan, dry_run=dry_run)
        if not dry_run:
            region = settings.aws_region
            entry = history.record_version(
                client, desired, lambda: ecr.get_registry_login(region), current_flow_run_id(), region
            )
            if entry is not None:
                logger.info("Kept version %s in the history of %s", desired.version, desired.full_name)

    if dry_run:
        logger.info("Dry run: deployment %s would be %s; nothing written", applied.full_name, applied.action)
    elif applied.action == "unchanged":
        logger.info("Deployment %s unchanged: %s", applied.full_name, applied.url)
    else:
        changed = ", ".join(applied.changed_fields) or "new"
        logger.info("Deployment %s %s (%s): %s", applied.full_name, applied.action, changed, applied.url)
    if not artifact:
        return applied
    create_markdown_artifact(
        key=f"deployment-{flow.replace('_', '-')}",
        markdown=render_deployment_markdown(applied, image),
        description=f"Deployment of flow {flow}",
    )
    return applied


def current_flow_run_id() -> str | None:
    """Return the id of the running flow run, for the history entry; None outside a run."""
    flow_run_id = prefect_runtime_flow_run.get_id()
    return str(flow_run_id) if flow_run_id else None


def prepare_task_definition(
    work_pool: str, pool: WorkPool, desired: DesiredDeployment, region: str, dry_run: bool
) -> None:
    """Name the deployment's task definition family in its job variables, and register it.

    Nothing is named when the worker's task definition depends on the deployment id: the
    worker then registers it itself on the first run. A dry run registers nothing, but still
    renders the task definition, so that a template the deployer cannot render fails now.
    """
    job_variables = desired.job_variables
    template = pool.base_job_template
    if needs_deployment_id(job_variables, template):
        # NOTE: with CloudWatch logs on and no cloudwatch_logs_prefix, each deployment keeps
        # the worker's own family and registers once per worker start.
        return
    family = family_for(work_pool, template, job_variables, region)
    if dry_run:
        render_task_definition(template, job_variables, region)
    else:
        registered = ensure_task_definition(
            region, family, lambda: render_task_definition(template, job_variables, region)
        )
        get_run_logger().info("ECS task definition %s: %s", registered.arn, registered.action)
    job_variables["family"] = family


def render_deployment_markdown(applied: AppliedDeployment, image: str, title: str = "Deployment") -> str:
    """Render the deployment artifact: the outcome, then every changed value against the previous version."""
    changed = ", ".join(applied.changed_fields) or "-"
    action = f"{applied.action} (dry run: nothing written)" if applied.dry_run else applied.action
    link = f"[{applied.url}]({applied.url})" if applied.url else "- (not created yet)"
    lines = [
        f"# {title} `{applied.full_name}`",
        "",
        "| field | value |",
        "|---|---|",
        f"| action | {action} |",
        f"| changed fields | {changed} |",
        f"| image | `{image}` |",
        f"| id | `{applied.id or '-'}` |",
        f"| link | {link} |",
        "",
        "## Changes against the previous version",
        "",
        render_changes_markdown(applied.changes),
    ]
    return "\n".join(lines)
