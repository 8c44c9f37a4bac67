"""Checks made before a meta-flow writes anything: every input it can check without a side effect.

The Prefect API is checked before a flow run starts, since starting one is already a write. A
deploy's flow entry, job variables and network are checked against the pool before any build.
"""

from __future__ import annotations

import os

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import WorkPool
from prefect.exceptions import ObjectNotFound
from prefect.settings import get_current_settings

from meta_flows.aws.network import check_network
from meta_flows.deployments import build_desired
from meta_flows.errors import FlowSpecError, SettingsError
from meta_flows.images import engine
from meta_flows.pool_template import validate_job_variables
from meta_flows.prefect_api import check_prefect_api, require_api_url
from meta_flows.project import DeploymentSpec, find_flow_spec
from meta_flows.settings import Settings


def require_prefect_api() -> None:
    """Raise PrefectApiError naming PREFECT_API_URL unless the Prefect API passes its health check."""
    require_api_url()
    with get_client(sync_client=True) as client:
        check_prefect_api(client)


def prefect_api_key_is_set() -> bool:
    key = get_current_settings().api.key
    return bool(os.environ.get("PREFECT_API_KEY") or (key and key.get_secret_value()))


def check_api_key_handling(settings: Settings) -> None:
    """Reject a Prefect API key that the ECS worker would hand to tasks as plain environment."""
    if prefect_api_key_is_set() and settings.prefect_api_key_secret_arn is None:
        raise SettingsError(
            "PREFECT_API_KEY is set but META_FLOWS_PREFECT_API_KEY_SECRET_ARN is not: the ECS worker "
            "would pass the key to every task as plain environment in RunTask. Store the key in "
            "Secrets Manager and set META_FLOWS_PREFECT_API_KEY_SECRET_ARN to its ARN"
        )


def check_settings_network(settings: Settings) -> None:
    """Check META_FLOWS_SUBNETS and META_FLOWS_SECURITY_GROUPS against EC2 when any is set."""
    if settings.subnets or settings.security_groups:
        check_network(
            settings.aws_region,
            settings.vpc_id,
            settings.subnets,
            settings.security_groups,
            "META_FLOWS_SUBNETS / META_FLOWS_SECURITY_GROUPS",
        )


def read_ecs_pool(client: SyncPrefectClient, pool_name: str) -> WorkPool:
    """Check the Prefect API, then return the ECS work pool, or raise FlowSpecError when it is missing."""
    check_prefect_api(client)
    try:
        return client.read_work_pool(pool_name)
    except ObjectNotFound:
        raise FlowSpecError(f"work pool {pool_name!r} not found: run `python -m meta_flows.bootstrap` first") from None


def check_deploy_inputs(settings: Settings, flow: str) -> DeploymentSpec:
    """Validate everything a deploy of flows/<flow> reads, before any build, push or write."""
    spec = find_flow_spec(settings.project_root, flow)
    engine.connect_engine().close()
    with get_client(sync_client=True) as client:
        template = read_ecs_pool(client, settings.work_pool).base_job_template
    validate_job_variables(spec.name, spec.job_variables, template)
    # Reads the flow's source and parameter schema; the image is filled in after the build.
    build_desired(
        settings.project_root,
        spec,
        entrypoint=spec.entrypoint,
        work_pool_name=settings.work_pool,
        work_queue_name=settings.work_queue,
        working_directory="/",
        job_variables=spec.job_variables,
        version=None,
    )
    network = spec.job_variables.get("network_configuration")
    if isinstance(network, dict):
        properties = template["variables"]["properties"]  # type: ignore[index]
        check_network(
            settings.aws_region,
            spec.job_variables.get("vpc_id") or properties.get("vpc_id", {}).get("default"),
            list(network.get("subnets") or []),
            list(network.get("securityGroups") or []),
            f"deployment {spec.name!r} job variable network_configuration",
        )
    return spec
