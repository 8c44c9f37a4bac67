"""Blocks, work pools and work queues on the Prefect server: look, compare, write only on change."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from prefect.blocks.core import Block
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.exceptions import ObjectNotFound
from prefect.workers.process import ProcessWorker
from prefect_aws import AwsCredentials

from blocks.ecs_task_settings import EcsTaskSettings
from meta_flows.errors import ForeignResourceError
from meta_flows.pool_template import build_base_job_template
from meta_flows.report import Action, ResourceResult
from meta_flows.settings import Settings

MANAGED_MARKER = "Managed by meta-flows (bootstrap-pool)."


def ensure_block_type(client: SyncPrefectClient, block_class: type[Block]) -> None:
    """Register the block's type and schema unless the server has this exact schema already."""
    try:
        client.read_block_type_by_slug(block_class.get_block_type_slug())
        client.read_block_schema_by_checksum(block_class._calculate_schema_checksum())
    except ObjectNotFound:
        block_class.register_type_and_schema()


def ensure_block(client: SyncPrefectClient, kind: str, name: str, desired: Block) -> tuple[ResourceResult, UUID]:
    """Save `desired` under `name` unless an equal block is stored; return the result and its id."""
    block_class = type(desired)
    ensure_block_type(client, block_class)
    existing: Block | None
    try:
        existing = block_class.load(name, validate=False)  # type: ignore[assignment]
    except ValueError:
        existing = None

    action: Action
    if existing is not None and _block_values(existing) == _block_values(desired):
        action = "unchanged"
        block_id = existing._block_document_id
    else:
        action = "created" if existing is None else "updated"
        block_id = desired.save(name, overwrite=True)  # type: ignore[assignment]
    if block_id is None:
        raise RuntimeError(f"block {name} has no document id after loading or saving")
    return ResourceResult(kind, name, action), block_id


def _block_values(block: Block) -> dict[str, Any]:
    # SecretStr compares by value, so equal keys compare equal without being revealed.
    return {name: getattr(block, name) for name in type(block).model_fields}


def ensure_blocks(
    client: SyncPrefectClient, settings: Settings, execution_role_arn: str
) -> tuple[list[ResourceResult], UUID, EcsTaskSettings]:
    """Ensure the credentials block and the ECS task settings block."""
    credentials = AwsCredentials(
        region_name=settings.aws_region,
        aws_access_key_id=(settings.aws_access_key_id.get_secret_value() if settings.aws_access_key_id else None),
        aws_secret_access_key=settings.aws_secret_access_key,
    )
    credentials_result, credentials_id = ensure_block(
        client, "credentials block", settings.credentials_block, credentials
    )
    task_settings = EcsTaskSettings(
        cluster=settings.cluster,
        execution_role_arn=execution_role_arn,
        task_role_arn=settings.task_role_arn,
        cpu=settings.cpu,
        memory=settings.memory,
        container_memory=settings.container_memory,
        cpu_architecture="ARM64" if settings.platform == "linux/arm64" else "X86_64",
        subnets=settings.subnets,
        security_groups=settings.security_groups,
        vpc_id=settings.vpc_id,
        prefect_api_key_secret_arn=settings.prefect_api_key_secret_arn,
    )
    settings_result, _ = ensure_block(client, "ECS task settings block", settings.task_settings_block, task_settings)
    return [credentials_result, settings_result], credentials_id, task_settings


def _same_template(left: dict[str, Any], right: dict[str, Any]) -> bool:
    return json.dumps(left, sort_keys=True) == json.dumps(right, sort_keys=True)


def ensure_pool(
    client: SyncPrefectClient, name: str, pool_type: str, template: dict[str, Any], description: str
) -> ResourceResult:
    """Create the pool, or update its template when this project created it and it differs."""
    kind = f"work pool ({pool_type})"
    try:
        existing = client.read_work_pool(name)
    except ObjectNotFound:
        client.create_work_pool(
            WorkPoolCreate(
                name=name, type=pool_type, base_job_template=template, description=f"{description} {MANAGED_MARKER}"
            )
        )
        return ResourceResult(kind, name, "created")

    if MANAGED_MARKER not in (existing.description or ""):
        return ResourceResult(kind, name, "foreign", "not created by this project: used as it is")
    if existing.type != pool_type:
        raise ForeignResourceError(
            f"work pool {name!r} has type {existing.type!r}, not {pool_type!r}: choose another pool name"
        )
    if _same_template(existing.base_job_template, template):
        return ResourceResult(kind, name, "unchanged")
    client.update_work_pool(name, WorkPoolUpdate(base_job_template=template))
    return ResourceResult(kind, name, "updated", "base job template")


def ensure_ecs_pool(
    client: SyncPrefectClient, settings: Settings, task_settings: EcsTaskSettings, credentials_id: UUID
) -> ResourceResult:
    template = build_base_job_template(task_settings, credentials_id)
    return ensure_pool(client, settings.work_pool, "ecs", template, "Runs Prefect flows as ECS tasks.")


def ensure_deployer_pool(client: SyncPrefectClient, name: str) -> ResourceResult:
    template = ProcessWorker.get_default_base_job_template()
    return ensure_pool(client, name, "process", template, "Runs the meta-flows on a machine with Docker.")


def ensure_work_queue(client: SyncPrefectClient, pool: str, queue: str) -> ResourceResult:
    """Create the work queue in the pool unless it exists; every pool has a `default` queue."""
    try:
        client.read_work_queue_by_name(queue, work_pool_name=pool)
    except ObjectNotFound:
        client.create_work_queue(name=queue, work_pool_name=pool)
        return ResourceResult("work queue", f"{pool}/{queue}", "created")
    return ResourceResult("work queue", f"{pool}/{queue}", "unchanged")
