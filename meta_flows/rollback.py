"""Flow "rollback-deployment": a deployment back on the version before its current one.

The versions come from the deployment's kept history (see `history.py`): the image and every
setting register-deployment applied. Rollback applies the previous version with the same plan
and apply as register-deployment, so it shows the same differences, honours the same schedule
rules, and `dry_run=True` stops after the differences. The rolled-back version leaves the
history, so a second rollback goes one version further back, and its image loses its `keep-`
tag in ECR.

Start it from the Prefect UI, or with `prefect deployment run 'rollback-deployment/default'
--param flow=<folder>`.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound

from meta_flows import history
from meta_flows.aws import ecr
from meta_flows.deploy_lock import deploy_lock
from meta_flows.deployment_plan import apply_plan, plan_deployment
from meta_flows.deployments import AppliedDeployment
from meta_flows.images.manifests import split_image
from meta_flows.images.registry import find_manifest_digest
from meta_flows.prefect_api import check_prefect_api
from meta_flows.project import find_flow_spec, read_flow_source
from meta_flows.register import render_deployment_markdown
from meta_flows.settings import load_settings


def check_image_present(image: str, region: str) -> None:
    """Raise RollbackError unless the registry still contains `image`."""
    host, repository, reference = split_image(image)
    login = ecr.get_registry_login(region)
    if find_manifest_digest(host, repository, reference, login) is None:
        raise history.RollbackError(
            f"image {image} of the previous version is no longer in the registry: it cannot be "
            "rolled back to; check the repository's lifecycle policy keeps tags starting with "
            f"{history.PROTECTED_TAG_PREFIX}"
        )


@flow(name="rollback-deployment")
def rollback_deployment(flow: str, dry_run: bool = False) -> AppliedDeployment:
    """Put the deployment of flows/<flow> back on the version before its current one.

    Args:
        flow: Folder of flows/ whose deployment to roll back, e.g. hello.
        dry_run: Show the differences only; write nothing.
    """
    logger = get_run_logger()
    settings = load_settings()
    spec = find_flow_spec(settings.project_root, flow)
    full_name = f"{read_flow_source(settings.project_root, spec).flow_name}/{spec.name}"

    # The deploy lock keeps a deploy-flow run of this flow from writing the history, or
    # re-protecting an image, while the rollback changes them.
    with get_client(sync_client=True) as client, deploy_lock(settings.repository_name(flow)):
        check_prefect_api(client)
        try:
            current = client.read_deployment_by_name(full_name)
        except ObjectNotFound:
            raise history.RollbackError(f"deployment {full_name} not found: deploy it with deploy-flow first") from None
        current_image = current.job_variables.get("image")
        entries = history.load_history(client, full_name)
        index, target = history.find_rollback_target(entries, current_image)
        if target.image:
            check_image_present(target.image, settings.aws_region)
        logger.info("Rolling %s back from %s to %s", full_name, current_image, target.image)

        plan = plan_deployment(client, target.desired)
        applied = apply_plan(client, plan, dry_run=dry_run)
        if not dry_run:
            history.save_history(client, full_name, entries[:index])
            # The versions rolled back from leave the history, so their images may expire.
            # The target stays in the history and keeps its tag.
            history.release_protected_tags(entries[index:], entries[:index], settings.aws_region)

    verb = "would roll back" if dry_run else "rolled back"
    logger.info("Deployment %s %s to version %s: %s", full_name, verb, target.desired.version, applied.url)
    create_markdown_artifact(
        key=f"rollback-{flow.replace('_', '-')}",
        markdown=render_deployment_markdown(applied, target.image or "-", title="Rollback of"),
        description=f"Rollback of the deployment of flow {flow}",
    )
    return applied
