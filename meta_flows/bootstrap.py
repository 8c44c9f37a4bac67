"""Flow "bootstrap-pool": the first set-up, idempotent; `python -m meta_flows.bootstrap`.

It validates the settings and prefect.yaml, checks the caller and the Prefect API, then ensures
the AWS resources (cluster, execution role unless one is given, one ECR repository per flow),
the credentials block, the ECS task settings block, the ECS work pool and its work queue, the
deployer pool (type process) and the meta-flows' own deployments on it. What exists and was not
created by this project is used as it is and never changed. A second run changes nothing.
"""

from __future__ import annotations

import argparse
import sys

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client

from meta_flows.aws import ecr, ecs, iam, sts
from meta_flows.deployment_plan import apply_deployment
from meta_flows.deployments import DesiredDeployment, build_desired
from meta_flows.errors import MetaFlowsError
from meta_flows.pools import ensure_blocks, ensure_deployer_pool, ensure_ecs_pool, ensure_work_queue
from meta_flows.prefect_api import check_prefect_api
from meta_flows.preflight import check_api_key_handling, check_settings_network, require_prefect_api
from meta_flows.project import find_flow_spec, list_flow_folders, meta_flow_specs
from meta_flows.report import ResourceResult, render_markdown_table, render_text_table
from meta_flows.settings import Settings, load_settings


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


def ensure_aws_resources(settings: Settings, account: str, flows: list[str]) -> tuple[list[ResourceResult], str]:
    """Ensure the cluster, the execution role and the repositories; return results and the role ARN."""
    region = settings.aws_region
    results = [ecs.ensure_cluster(region, settings.cluster)]
    role_arn = settings.execution_role_arn
    if role_arn is None:
        cluster_name = settings.cluster.rpartition("/")[2]
        policy = iam.execution_policy(account, region, settings.repository_prefix)
        role_result, role_arn = iam.ensure_execution_role(region, f"{cluster_name}-execution", policy)
        results.append(role_result)
    results += [ecr.ensure_repository(region, settings.repository_name(f)) for f in flows]
    return results, role_arn


@flow(name="bootstrap-pool")
def bootstrap_pool() -> list[ResourceResult]:
    """Set up (or confirm) everything the meta-flows need; safe to run again at any time."""
    logger = get_run_logger()
    settings = load_settings()
    check_api_key_handling(settings)
    flows = list_flow_folders(settings.project_root)
    for folder in flows:
        find_flow_spec(settings.project_root, folder)
    meta_deployments = plan_meta_deployments(settings)

    with get_client(sync_client=True) as client:
        check_prefect_api(client)
        identity = sts.get_caller_identity(settings.aws_region)
        logger.info("AWS caller %s in account %s, region %s", identity.arn, identity.account, settings.aws_region)
        check_settings_network(settings)

        results, execution_role_arn = ensure_aws_resources(settings, identity.account, flows)
        block_results, credentials_id, task_settings = ensure_blocks(client, settings, execution_role_arn)
        results += block_results
        results.append(ensure_ecs_pool(client, settings, task_settings, credentials_id))
        results.append(ensure_work_queue(client, settings.work_pool, settings.work_queue))
        results.append(ensure_deployer_pool(client, settings.deployer_pool))
        for desired in meta_deployments:
            applied = apply_deployment(client, desired)
            results.append(ResourceResult("deployment", applied.full_name, applied.action, applied.url))

    for result in results:
        logger.info("%s %s: %s", result.kind, result.name, result.action)
    if all(r.action in ("unchanged", "foreign") for r in results):
        logger.info("Everything was in place already: nothing created or changed")
    create_markdown_artifact(
        key="bootstrap-pool",
        markdown="# Bootstrap\n\n" + render_markdown_table(results),
        description="What bootstrap-pool created, updated or found in place",
    )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m meta_flows.bootstrap",
        description="Set up the AWS resources, blocks, work pools and meta-flow deployments.",
    )
    parser.parse_args(argv)
    try:
        # Bad settings and an unreachable Prefect API fail here, before a flow run exists.
        check_api_key_handling(load_settings())
        require_prefect_api()
        results = bootstrap_pool()
    except MetaFlowsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(render_text_table(results))
    if all(r.action in ("unchanged", "foreign") for r in results):
        print("Nothing to do: every item is unchanged.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
