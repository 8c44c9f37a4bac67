"""Flow "bootstrap-pool": the first set-up, idempotent; `python -m meta_flows.bootstrap`.

It validates the settings and prefect.yaml and checks the caller and the Prefect API. Then it
plans every resource by look-ups only: the AWS side (cluster, log group, roles, ECR repositories, the
observer queue and rule, optionally the worker service), the credentials block, the ECS task
settings block, the ECS work pool and its work queue, the deployer pool (type process) and the
meta-flows' own deployments on it. `--dry-run` prints that plan and stops; otherwise the same
steps are applied in order. What exists and was not created by this project is used as it is
and never changed. A second run changes nothing.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.workers.process import ProcessWorker
from prefect_aws import AwsCredentials

from blocks.ecs_task_settings import EcsTaskSettings
from meta_flows.aws import sts
from meta_flows.aws.network import Network, validate_network
from meta_flows.aws.resources import AwsNames, names_for, plan_aws, worker_definition
from meta_flows.deployments import DesiredDeployment, build_desired
from meta_flows.errors import MetaFlowsError
from meta_flows.plan import Step
from meta_flows.pool_template import build_base_job_template
from meta_flows.prefect_api import check_prefect_api
from meta_flows.prefect_plan import plan_block, plan_deployment, plan_pool, plan_work_queue
from meta_flows.preflight import check_api_key_handling, check_settings_network, require_prefect_api
from meta_flows.project import find_flow_spec, list_flow_folders, meta_flow_specs
from meta_flows.report import ResourceResult, render_markdown_table, render_text_table
from meta_flows.settings import Settings, load_settings

# Stands in for the credentials block's id while planning against a server that lacks the block.
UNSAVED_BLOCK_ID = UUID(int=0)


@dataclass
class BootstrapReport:
    """The rows of the table, and what bootstrap prints after it."""

    results: list[ResourceResult]
    dry_run: bool
    notes: list[str]


def plan_meta_deployments(settings: Settings) -> list[DesiredDeployment]:
    """Build the meta-flows' own deployments from prefect.yaml; validates them all first."""
    root = settings.project_root
    return [
        build_desired(
            root,
            spec,
            entrypoint=spec.entrypoint,
            work_pool_name=settings.deployer_pool,
            work_queue_name="default",
            working_directory=str(root),
            job_variables=spec.job_variables,
            version=None,
        )
        for spec in meta_flow_specs(root)
    ]


def task_settings_for(settings: Settings, names: AwsNames, network: Network) -> EcsTaskSettings:
    return EcsTaskSettings(
        cluster=settings.cluster,
        execution_role_arn=names.execution_role_arn,
        task_role_arn=names.task_role_arn,
        cpu=settings.cpu,
        memory=settings.memory,
        container_memory=settings.container_memory,
        cpu_architecture=settings.effective_cpu_architecture,
        # prefect-aws needs the VPC beside custom subnets; it is the subnets' VPC when not set.
        vpc_id=network.vpc_id if settings.subnets else settings.vpc_id,
        subnets=settings.subnets,
        security_groups=settings.security_groups,
        ephemeral_storage=settings.ephemeral_storage,
        container_secrets=settings.container_secrets,
        prefect_api_key_secret_arn=settings.prefect_api_key_secret_arn,
        env=settings.pool_env,
        log_group=settings.effective_log_group,
        log_region=settings.aws_region,
    )


def plan_prefect(
    client: SyncPrefectClient,
    settings: Settings,
    names: AwsNames,
    network: Network,
    meta_deployments: list[DesiredDeployment],
) -> list[Step]:
    """Look up the blocks, pools, queue and deployments; return their steps in apply order."""
    credentials = AwsCredentials(
        region_name=settings.aws_region,
        aws_access_key_id=(settings.aws_access_key_id.get_secret_value() if settings.aws_access_key_id else None),
        aws_secret_access_key=settings.aws_secret_access_key,
    )
    credentials_step = plan_block(client, "credentials block", settings.credentials_block, credentials)
    task_settings = task_settings_for(settings, names, network)
    settings_step = plan_block(client, "ECS task settings block", settings.task_settings_block, task_settings)

    def ecs_template() -> dict[str, object]:
        return build_base_job_template(task_settings, credentials_step.block_id or UNSAVED_BLOCK_ID)

    ecs_pool = plan_pool(client, settings.work_pool, "ecs", ecs_template, "Runs Prefect flows as ECS tasks.")
    steps: list[Step] = [credentials_step, settings_step, ecs_pool]
    steps.append(plan_work_queue(client, settings.work_pool, settings.work_queue, ecs_pool))
    steps.append(
        plan_pool(
            client,
            settings.deployer_pool,
            "process",
            ProcessWorker.get_default_base_job_template,
            "Runs the meta-flows on a machine with Docker.",
        )
    )
    steps += [plan_deployment(client, desired) for desired in meta_deployments]
    return steps


def plan_bootstrap(client: SyncPrefectClient, settings: Settings) -> tuple[list[Step], list[str]]:
    """Validate everything, then look up every resource; return the steps and notes to print."""
    logger = get_run_logger()
    flows = list_flow_folders(settings.project_root)
    for folder in flows:
        find_flow_spec(settings.project_root, folder)
    meta_deployments = plan_meta_deployments(settings)

    check_prefect_api(client)
    identity = sts.get_caller_identity(settings.aws_region)
    partition = identity.arn.split(":")[1]
    logger.info("AWS caller %s in account %s, region %s", identity.arn, identity.account, settings.aws_region)
    check_settings_network(settings)
    network: Network = validate_network(
        settings.aws_region, settings.vpc_id, settings.subnets, settings.security_groups
    )
    names = names_for(settings, identity.account, partition)
    steps = plan_aws(settings, identity.account, partition, flows, network)
    steps += plan_prefect(client, settings, names, network, meta_deployments)

    notes = [
        f"ECS worker: set PREFECT_INTEGRATIONS_AWS_ECS_OBSERVER_SQS_QUEUE_NAME={settings.effective_observer_queue} "
        f"and run `prefect worker start --pool {settings.work_pool} --type ecs`"
    ]
    if settings.worker_service:
        worker = worker_definition(settings, names, network)
        notes = [f"ECS worker runs as service {worker.service_name}; watch it with: {worker.watch_command()}"]
    return steps, notes


@flow(name="bootstrap-pool")
def bootstrap_pool(dry_run: bool = False) -> BootstrapReport:
    """Set up (or confirm) everything the meta-flows need; safe to run again at any time.

    Args:
        dry_run: Plan only: report what would be created or updated, and change nothing.
    """
    logger = get_run_logger()
    settings = load_settings()
    check_api_key_handling(settings)
    with get_client(sync_client=True) as client:
        steps, notes = plan_bootstrap(client, settings)
        if dry_run:
            results = [step.planned() for step in steps]
        else:
            results = []
            for step in steps:
                results.append(step.apply())

    for result in results:
        logger.info("%s %s: %s", result.kind, result.name, result.action)
    if all(r.action in ("unchanged", "foreign") for r in results):
        logger.info("Everything was in place already: nothing created or changed")
    title = "# Bootstrap plan (dry run: nothing changed)" if dry_run else "# Bootstrap"
    create_markdown_artifact(
        key="bootstrap-pool-plan" if dry_run else "bootstrap-pool",
        markdown=f"{title}\n\n" + render_markdown_table(results) + "\n\n" + "\n\n".join(notes),
        description="What bootstrap-pool would do" if dry_run else "What bootstrap-pool created, updated or found",
    )
    return BootstrapReport(results=results, dry_run=dry_run, notes=notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m meta_flows.bootstrap",
        description="Set up the AWS resources, blocks, work pools and meta-flow deployments.",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would be created or updated, and change nothing"
    )
    args = parser.parse_args(argv)
    try:
        # Bad settings and an unreachable Prefect API fail here, before a flow run exists.
        check_api_key_handling(load_settings())
        require_prefect_api()
        report = bootstrap_pool(dry_run=args.dry_run)
    except MetaFlowsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if report.dry_run:
        print("Dry run: nothing was created or changed. Planned actions:")
    print(render_text_table(report.results))
    if all(r.action in ("unchanged", "foreign") for r in report.results):
        print("Nothing to do: every item is unchanged.")
    print()
    for note in report.notes:
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
