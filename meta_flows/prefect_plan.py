"""The Prefect side of bootstrap-pool as plan steps: blocks, pools, the work queue, deployments.

Look-ups only until a step is applied. The ECS pool's template refers to the credentials block
by id, which a fresh server does not have yet, so the pool step reads the id at apply time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from prefect.blocks.core import Block
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.exceptions import ObjectNotFound

from meta_flows.deployment_plan import apply_plan
from meta_flows.deployment_plan import plan_deployment as plan_deployment_changes
from meta_flows.deployments import DesiredDeployment
from meta_flows.errors import ForeignResourceError
from meta_flows.plan import Step
from meta_flows.pools import MANAGED_MARKER, _block_values, _same_template, ensure_block_type


@dataclass
class BlockStep(Step):
    """A block step that remembers the block's id, known now or once the step is applied."""

    block_id: UUID | None = None


def plan_block(client: SyncPrefectClient, kind: str, name: str, desired: Block) -> BlockStep:
    """Plan one block document: create, update when its values differ, or leave it."""
    block_class = type(desired)
    try:
        existing: Block | None = block_class.load(name, validate=False)  # type: ignore[assignment]
    except (ValueError, ObjectNotFound):
        existing = None
    step = BlockStep(kind, name, "unchanged")

    def save() -> None:
        ensure_block_type(client, block_class)
        step.block_id = desired.save(name, overwrite=True)  # type: ignore[assignment]

    step.run = save
    if existing is None:
        step.action = "create"
    else:
        step.block_id = existing._block_document_id
        if _block_values(existing) != _block_values(desired):
            step.action = "update"
    return step


def plan_pool(
    client: SyncPrefectClient,
    name: str,
    pool_type: str,
    template: Callable[[], dict[str, Any]],
    description: str,
) -> Step:
    """Plan a work pool; `template` is called at plan time and again at apply time."""
    kind = f"work pool ({pool_type})"
    try:
        existing = client.read_work_pool(name)
    except ObjectNotFound:

        def create() -> None:
            client.create_work_pool(
                WorkPoolCreate(
                    name=name,
                    type=pool_type,
                    base_job_template=template(),
                    description=f"{description} {MANAGED_MARKER}",
                )
            )

        return Step(kind, name, "create", "", create)

    # A pool of the wrong type cannot be used, whoever created it.
    if existing.type != pool_type:
        raise ForeignResourceError(
            f"work pool {name!r} has type {existing.type!r}, not {pool_type!r}: choose another pool name"
        )
    if MANAGED_MARKER not in (existing.description or ""):
        return Step(kind, name, "foreign", "not created by this project: used as it is")
    if _same_template(existing.base_job_template, template()):
        return Step(kind, name, "unchanged")

    def update() -> None:
        client.update_work_pool(name, WorkPoolUpdate(base_job_template=template()))

    return Step(kind, name, "update", "base job template", update)


def plan_work_queue(client: SyncPrefectClient, pool: str, queue: str, pool_step: Step) -> Step:
    """Plan the work queue; a pool that does not exist yet has no queue either."""
    kind, name = "work queue", f"{pool}/{queue}"

    def create() -> None:
        client.create_work_queue(name=queue, work_pool_name=pool)

    if pool_step.action == "create":
        # Every new pool gets a `default` queue from the server itself.
        return Step(kind, name, "unchanged" if queue == "default" else "create", "", create)
    try:
        client.read_work_queue_by_name(queue, work_pool_name=pool)
    except ObjectNotFound:
        return Step(kind, name, "create", "", create)
    return Step(kind, name, "unchanged")


def plan_deployment(client: SyncPrefectClient, desired: DesiredDeployment) -> Step:
    """Plan one deployment: create, update naming the fields that differ, or leave it."""
    plan = plan_deployment_changes(client, desired)

    def apply() -> None:
        apply_plan(client, plan)

    if plan.existing_id is None:
        return Step("deployment", desired.full_name, "create", "", apply)
    if plan.is_empty:
        return Step("deployment", desired.full_name, "unchanged")
    return Step("deployment", desired.full_name, "update", ", ".join(plan.changed_fields), apply)
