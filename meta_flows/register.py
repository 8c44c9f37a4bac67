"""Flow "register-deployment": the Prefect deployment of one flow on the ECS work pool.

It comes from the flow's entry in prefect.yaml plus the image. The flow's parameter schema is
read from its source, so the deployer needs none of the flow's own dependencies installed.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound

from meta_flows.deployments import AppliedDeployment, apply_deployment, build_desired
from meta_flows.errors import FlowSpecError, SettingsError
from meta_flows.images.dockerfile import flow_workdir
from meta_flows.pool_template import validate_job_variables
from meta_flows.prefect_api import check_prefect_api
from meta_flows.project import find_flow_spec
from meta_flows.settings import load_settings

IMAGE_PATTERN = re.compile(r"^[a-z0-9.:\[\]-]+(?:/[a-z0-9._-]+)+(?::[A-Za-z0-9_.-]{1,128}|@sha256:[a-f0-9]{64})$")


def image_version(image: str) -> str:
    """Return the image's tag, or its digest, as the deployment version."""
    if "@" in image:
        return image.rpartition("@")[2]
    return image.rpartition(":")[2]


@flow(name="register-deployment")
def register_deployment(flow: str, image: str) -> AppliedDeployment:
    """Create or update the deployment of flows/<flow> on the ECS pool, running `image`.

    Args:
        flow: Folder of flows/ to register.
        image: Image address with tag or digest, as build-and-push-image returns it.
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
        check_prefect_api(client)
        try:
            pool = client.read_work_pool(settings.work_pool)
        except ObjectNotFound:
            raise FlowSpecError(
                f"work pool {settings.work_pool!r} not found: run `python -m meta_flows.bootstrap` first"
            ) from None
        validate_job_variables(spec.name, spec.job_variables, pool.base_job_template)
        desired = build_desired(
            settings.project_root,
            spec,
            entrypoint=entrypoint,
            work_pool_name=settings.work_pool,
            work_queue_name=settings.work_queue,
            working_directory=flow_workdir(flow),
            job_variables={**spec.job_variables, "image": image},
            version=image_version(image),
        )
        applied = apply_deployment(client, desired)

    if applied.action == "unchanged":
        logger.info("Deployment %s unchanged: %s", applied.full_name, applied.url)
    else:
        changed = ", ".join(applied.changed_fields) or "new"
        logger.info("Deployment %s %s (%s): %s", applied.full_name, applied.action, changed, applied.url)
    create_markdown_artifact(
        key=f"deployment-{flow.replace('_', '-')}",
        markdown=render_deployment_markdown(applied, image),
        description=f"Deployment of flow {flow}",
    )
    return applied


def render_deployment_markdown(applied: AppliedDeployment, image: str) -> str:
    """Render the deployment artifact of a register-deployment run."""
    changed = ", ".join(applied.changed_fields) or "-"
    return "\n".join(
        [
            f"# Deployment `{applied.full_name}`",
            "",
            "| field | value |",
            "|---|---|",
            f"| action | {applied.action} |",
            f"| changed fields | {changed} |",
            f"| image | `{image}` |",
            f"| id | `{applied.id}` |",
            f"| link | [{applied.url}]({applied.url}) |",
        ]
    )
