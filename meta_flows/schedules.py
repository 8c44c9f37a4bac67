"""Declarative schedules: how prefect.yaml's `schedules` map onto a deployment's schedules.

The rules:

- `schedules` absent from the entry: the deployment's schedules are left as they are.
- `schedules: []`: every schedule of the deployment is removed.
- Each listed schedule has a slug (its own `slug`, else `schedule-<n>` by position). A server
  schedule with the same slug is updated in place, so its id stays the same. A listed schedule
  with no match is created, and a server schedule that is not listed is deleted.
- `active:` set in prefect.yaml wins. Without it, an existing schedule keeps the server's
  state (a schedule paused in the UI stays paused), and a new schedule starts active.

Schedules are written through the deployment schedule API (one call per schedule that
changed), never by re-sending the whole deployment. In Prefect 3.9 an upsert of the whole
deployment deletes and re-creates every schedule with new ids, while an in-place update keeps
the id. The scheduler keys each run on the schedule id and its start time, so a stable id
means a redeploy never leaves two runs for the same start time.
"""

from __future__ import annotations

import json
from typing import Any, Literal
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.actions import DeploymentScheduleCreate
from pydantic import BaseModel

from meta_flows.diff import FieldChange, canonical


class ScheduleOperation(BaseModel):
    """One write to a deployment's schedules: create, update or delete."""

    action: Literal["create", "update", "delete"]
    slug: str | None
    schedule_id: UUID | None = None
    schedule: dict[str, Any] | None = None
    active: bool | None = None
    parameters: dict[str, Any] = {}
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


def default_slug(index: int) -> str:
    """Return the slug of the schedule at `index` (0-based) when prefect.yaml gives none."""
    return f"schedule-{index + 1}"


def server_schedule(existing: Any) -> dict[str, Any]:
    """Return a server schedule in the same shape as a desired one."""
    return {
        "schedule": json.loads(existing.schedule.model_dump_json()),
        "active": existing.active,
        "parameters": dict(existing.parameters or {}),
        "slug": existing.slug,
    }


def _match(desired: dict[str, Any], index: int, existing: list[Any], taken: set[UUID]) -> Any | None:
    for candidate in existing:
        if candidate.id not in taken and candidate.slug == desired["slug"]:
            return candidate
    # A schedule written without a slug (by an older register, or by hand) is matched by
    # position, and gets the slug with its update.
    if index < len(existing) and existing[index].slug is None and existing[index].id not in taken:
        return existing[index]
    return None


def plan_schedules(desired: list[dict[str, Any]] | None, existing: list[Any]) -> list[ScheduleOperation]:
    """Return the writes that make the server's schedules match `desired`; None means unmanaged."""
    if desired is None:
        return []
    operations: list[ScheduleOperation] = []
    taken: set[UUID] = set()
    for index, wanted in enumerate(desired):
        match = _match(wanted, index, existing, taken)
        if match is None:
            active = True if wanted["active"] is None else wanted["active"]
            after = {**wanted, "active": active}
            operations.append(
                ScheduleOperation(
                    action="create",
                    slug=wanted["slug"],
                    schedule=wanted["schedule"],
                    active=active,
                    parameters=wanted["parameters"],
                    after=after,
                )
            )
            continue
        taken.add(match.id)
        before = server_schedule(match)
        active = before["active"] if wanted["active"] is None else wanted["active"]
        after = {**wanted, "active": active}
        if canonical(before) != canonical(after):
            operations.append(
                ScheduleOperation(
                    action="update",
                    slug=wanted["slug"],
                    schedule_id=match.id,
                    schedule=wanted["schedule"],
                    active=active,
                    parameters=wanted["parameters"],
                    before=before,
                    after=after,
                )
            )
    for leftover in existing:
        if leftover.id not in taken:
            operations.append(
                ScheduleOperation(
                    action="delete", slug=leftover.slug, schedule_id=leftover.id, before=server_schedule(leftover)
                )
            )
    return operations


def schedule_changes(operations: list[ScheduleOperation]) -> list[FieldChange]:
    """Describe schedule writes as field changes, one per schedule, named by slug."""
    return [
        FieldChange(path=f"schedules.{op.slug or op.schedule_id}", before=op.before, after=op.after)
        for op in operations
    ]


def apply_schedule_operations(
    client: SyncPrefectClient, deployment_id: UUID, operations: list[ScheduleOperation]
) -> None:
    """Write each schedule operation through the deployment schedule API."""
    for op in operations:
        if op.action == "delete" and op.schedule_id is not None:
            client.delete_deployment_schedule(deployment_id, op.schedule_id)
        elif op.action == "update" and op.schedule_id is not None:
            schedule = DeploymentScheduleCreate.model_validate(
                {"schedule": op.schedule, "active": bool(op.active)}
            ).schedule
            client.update_deployment_schedule(
                deployment_id,
                op.schedule_id,
                active=op.active,
                schedule=schedule,
                parameters=op.parameters,
                slug=op.slug,
            )
        elif op.action == "create":
            client.create_deployment_schedules(deployment_id, [schedule_create(op)])


def schedule_create(op: ScheduleOperation) -> DeploymentScheduleCreate:
    """Return the create request of a `create` operation."""
    # The schedule is the server's JSON shape; validation turns it into the schedule model.
    return DeploymentScheduleCreate.model_validate(
        {"schedule": op.schedule, "active": bool(op.active), "parameters": op.parameters, "slug": op.slug}
    )
