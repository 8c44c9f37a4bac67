"""Flow "teardown": remove what bootstrap-pool created, in dependency order; `python -m meta_flows.teardown`.

Only resources that carry the managed-by=meta-flows tag (AWS) or the marker in their
description (work pools) are deleted. Anything else with the same name is reported `foreign`
and left alone. A resource that does not exist is reported `absent`.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from prefect import flow, get_run_logger
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName
from prefect.exceptions import ObjectNotFound

from meta_flows.aws import ecr_plan, ecs_plan, logs, observer, roles, sts, worker_service
from meta_flows.aws.resources import names_for
from meta_flows.errors import MetaFlowsError
from meta_flows.pools import MANAGED_MARKER
from meta_flows.prefect_api import check_prefect_api
from meta_flows.settings import Settings, load_settings


@dataclass(frozen=True)
class Removal:
    """One resource and whether teardown deleted it."""

    kind: str
    name: str
    outcome: str  # "deleted", "foreign" or "absent"


def remove_aws(settings: Settings, account: str, partition: str) -> list[Removal]:
    """Delete the AWS resources of this project, dependents first."""
    region = settings.aws_region
    names = names_for(settings, account, partition)
    removals = [
        Removal(
            "ECS service (worker)",
            names.worker_service,
            "deleted"
            if worker_service.delete_service(region, settings.cluster, names.worker_service)
            else "absent or foreign",
        ),
        Removal(
            "ECS task definition (worker)",
            names.worker_family,
            f"{worker_service.deregister_task_definitions(region, names.worker_family)} revisions deregistered",
        ),
        Removal(
            "EventBridge rule (task events)",
            names.observer_rule,
            "deleted" if observer.delete_rule(region, names.observer_rule) else "absent or foreign",
        ),
        Removal(
            "SQS queue (task events)",
            settings.effective_observer_queue,
            "deleted" if observer.delete_queue(region, settings.effective_observer_queue) else "absent or foreign",
        ),
    ]
    for repository in ecr_plan.list_repositories(region, settings.repository_prefix):
        deleted = ecr_plan.delete_repository(region, repository)
        removals.append(Removal("ECR repository", repository, "deleted" if deleted else "foreign"))
    removals.append(
        Removal(
            "CloudWatch log group",
            settings.effective_log_group,
            "deleted" if logs.delete_log_group(region, settings.effective_log_group) else "absent or foreign",
        )
    )
    for kind, role in (
        ("IAM worker role", names.worker_role_name),
        ("IAM task role", names.task_role_name),
        ("IAM execution role", names.execution_role_name),
    ):
        removals.append(Removal(kind, role, "deleted" if roles.delete_role(region, role) else "absent or foreign"))
    removals.append(
        Removal(
            "ECS cluster",
            settings.cluster,
            "deleted" if ecs_plan.delete_cluster(region, settings.cluster) else "absent or foreign",
        )
    )
    return removals


def remove_prefect(client: SyncPrefectClient, settings: Settings) -> list[Removal]:
    """Delete this project's work pools, their deployments, and the blocks of the ECS pool."""
    removals = []
    for pool_name in (settings.work_pool, settings.deployer_pool):
        try:
            pool = client.read_work_pool(pool_name)
        except ObjectNotFound:
            removals.append(Removal("work pool", pool_name, "absent"))
            continue
        if MANAGED_MARKER not in (pool.description or ""):
            removals.append(Removal("work pool", pool_name, "foreign"))
            continue
        deployments = client.read_deployments(
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool_name]))
        )
        for deployment in deployments:
            client.delete_deployment(deployment.id)
            removals.append(Removal("deployment", f"{deployment.name} (pool {pool_name})", "deleted"))
        client.delete_work_pool(pool_name)
        removals.append(Removal("work pool", pool_name, "deleted"))
        if pool_name == settings.work_pool:
            removals += _remove_blocks(client, settings)
    return removals


def _remove_blocks(client: SyncPrefectClient, settings: Settings) -> list[Removal]:
    # The blocks carry no ownership marker of their own: they are removed with the ECS pool
    # this project created from them, and only then.
    removals = []
    for block_type, name in (
        ("aws-credentials", settings.credentials_block),
        ("meta-flows-ecs-task-settings", settings.task_settings_block),
    ):
        try:
            document = client.read_block_document_by_name(name, block_type_slug=block_type)
        except ObjectNotFound:
            removals.append(Removal("block", name, "absent"))
            continue
        client.delete_block_document(document.id)
        removals.append(Removal("block", name, "deleted"))
    return removals


@flow(name="teardown")
def teardown() -> list[Removal]:
    """Remove what bootstrap-pool created; leave every foreign resource alone."""
    logger = get_run_logger()
    settings = load_settings()
    with get_client(sync_client=True) as client:
        check_prefect_api(client)
        identity = sts.get_caller_identity(settings.aws_region)
        removals = remove_prefect(client, settings)
        removals += remove_aws(settings, identity.account, identity.arn.split(":")[1])
    for removal in removals:
        logger.info("%s %s: %s", removal.kind, removal.name, removal.outcome)
    return removals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m meta_flows.teardown",
        description="Remove the pools, blocks and AWS resources bootstrap created; foreign ones stay.",
    )
    parser.parse_args(argv)
    try:
        removals = teardown()
    except MetaFlowsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    width_kind = max(len(r.kind) for r in removals)
    width_name = max(len(r.name) for r in removals)
    print(f"{'resource':<{width_kind}}  {'name':<{width_name}}  outcome")
    for removal in removals:
        print(f"{removal.kind:<{width_kind}}  {removal.name:<{width_name}}  {removal.outcome}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
