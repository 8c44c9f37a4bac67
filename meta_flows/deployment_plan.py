"""Plan, then apply: the differences between the desired deployment and the server's copy.

A plan lists every changed value (for the artifact and a dry run) and the writes that apply
them. Nothing is written when the plan is empty, so a second, identical register creates and
updates nothing. Schedules follow the rules in `schedules.py`.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.actions import DeploymentUpdate
from prefect.exceptions import ObjectNotFound
from pydantic import BaseModel

from meta_flows.deployments import AppliedDeployment, DesiredDeployment, deployment_url
from meta_flows.diff import FieldChange, diff_values
from meta_flows.report import Action
from meta_flows.schedules import (
    ScheduleOperation,
    apply_schedule_operations,
    plan_schedules,
    schedule_changes,
    schedule_create,
)
from meta_flows.server_writes import server_writes

# Deployment fields compared and written besides the schedules, in the order the diff shows them.
COMPARED_FIELDS = [
    "version",
    "job_variables",
    "parameters",
    "entrypoint",
    "work_pool_name",
    "work_queue_name",
    "description",
    "tags",
    "pull_steps",
    "parameter_openapi_schema",
]


class DeploymentPlan(BaseModel):
    """Changes that an apply of `desired` would make on the server."""

    desired: DesiredDeployment
    existing_id: UUID | None
    field_changes: list[FieldChange] = []
    schedule_operations: list[ScheduleOperation] = []

    @property
    def changes(self) -> list[FieldChange]:
        return self.field_changes + schedule_changes(self.schedule_operations)

    @property
    def changed_fields(self) -> list[str]:
        return sorted({change.field for change in self.changes})

    @property
    def is_empty(self) -> bool:
        return self.existing_id is not None and not self.changes


def current_values(existing: Any) -> dict[str, Any]:
    """Return the server's values of the compared fields."""
    values = {name: getattr(existing, name) for name in COMPARED_FIELDS}
    values["tags"] = sorted(existing.tags)
    values["pull_steps"] = existing.pull_steps or []
    # No description is sent as "" (see _create), which the server returns as it is.
    values["description"] = existing.description or None
    return values


def read_existing(client: SyncPrefectClient, full_name: str) -> Any | None:
    """Return the server's deployment `full_name`, or None when there is none."""
    try:
        return client.read_deployment_by_name(full_name)
    except ObjectNotFound:
        return None


def plan_deployment(client: SyncPrefectClient, desired: DesiredDeployment) -> DeploymentPlan:
    """Compare `desired` with the server's copy, field by field; writes nothing."""
    existing = read_existing(client, desired.full_name)
    if existing is None:
        wanted = desired.model_dump(include=set(COMPARED_FIELDS))
        changes = [FieldChange(path=name, before=None, after=wanted[name]) for name in COMPARED_FIELDS]
        schedules = plan_schedules(desired.schedules, [])
        return DeploymentPlan(desired=desired, existing_id=None, field_changes=changes, schedule_operations=schedules)

    before = current_values(existing)
    after = desired.model_dump(include=set(COMPARED_FIELDS))
    changes = []
    for name in COMPARED_FIELDS:
        changes += diff_values(name, before[name], after[name])
    return DeploymentPlan(
        desired=desired,
        existing_id=existing.id,
        field_changes=changes,
        schedule_operations=plan_schedules(desired.schedules, list(existing.schedules)),
    )


def _create(client: SyncPrefectClient, plan: DeploymentPlan) -> UUID:
    desired = plan.desired
    flow_id = client.create_flow_from_name(desired.flow_name)
    return client.create_deployment(
        flow_id=flow_id,
        name=desired.name,
        version=desired.version,
        schedules=[schedule_create(op) for op in plan.schedule_operations],
        parameters=desired.parameters,
        # Prefect 3.9.1 stores a None description as the text "None", so none is sent as "".
        description=desired.description or "",
        work_queue_name=desired.work_queue_name,
        work_pool_name=desired.work_pool_name,
        tags=desired.tags,
        entrypoint=desired.entrypoint,
        parameter_openapi_schema=desired.parameter_openapi_schema,
        pull_steps=desired.pull_steps,
        enforce_parameter_schema=True,
        job_variables=desired.job_variables,
    )


def _update(client: SyncPrefectClient, plan: DeploymentPlan, deployment_id: UUID) -> None:
    desired = plan.desired
    if plan.field_changes:
        # `schedules` stays unset, so the server leaves the schedules to the calls below.
        update = DeploymentUpdate(
            version=desired.version,
            description=desired.description or "",
            parameters=desired.parameters,
            tags=desired.tags,
            work_queue_name=desired.work_queue_name,
            work_pool_name=desired.work_pool_name,
            job_variables=desired.job_variables,
            entrypoint=desired.entrypoint,
            enforce_parameter_schema=True,
            parameter_openapi_schema=desired.parameter_openapi_schema,
            pull_steps=desired.pull_steps,
        )
        client.update_deployment(deployment_id, update)
    apply_schedule_operations(client, deployment_id, plan.schedule_operations)


def apply_plan(client: SyncPrefectClient, plan: DeploymentPlan, dry_run: bool = False) -> AppliedDeployment:
    """Apply the plan's writes, or none of them in a dry run; report what changed."""
    desired = plan.desired
    deployment_id = plan.existing_id
    action: Action
    if plan.is_empty:
        action = "unchanged"
    elif deployment_id is None:
        action = "created"
        if not dry_run:
            with server_writes:
                deployment_id = _create(client, plan)
    else:
        action = "updated"
        if not dry_run:
            with server_writes:
                _update(client, plan, deployment_id)
    return AppliedDeployment(
        id=deployment_id,
        full_name=desired.full_name,
        url=deployment_url(deployment_id) if deployment_id else "",
        action=action,
        changed_fields=[] if action == "created" else plan.changed_fields,
        changes=plan.changes,
        dry_run=dry_run,
    )


def apply_deployment(client: SyncPrefectClient, desired: DesiredDeployment) -> AppliedDeployment:
    """Create or update the deployment; write nothing when the server already matches."""
    return apply_plan(client, plan_deployment(client, desired))
