"""The Prefect deployment as desired, built from prefect.yaml; deployment_plan.py applies it.

A deployment is written only when what is desired differs from what the server holds, so a
second, identical register creates and updates nothing.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule, RRuleSchedule
from prefect.settings import get_current_settings
from prefect.utilities.callables import parameter_schema_from_entrypoint
from pydantic import BaseModel, ValidationError

from meta_flows.diff import FieldChange
from meta_flows.errors import FlowSpecError
from meta_flows.project import DeploymentSpec, FlowSource, read_flow_source
from meta_flows.report import Action
from meta_flows.schedules import default_slug


class DesiredDeployment(BaseModel):
    """Every field of a deployment that this project sets."""

    flow_name: str
    name: str
    entrypoint: str
    work_pool_name: str
    work_queue_name: str
    description: str | None = None
    version: str | None = None
    parameters: dict[str, Any] = {}
    parameter_openapi_schema: dict[str, Any] = {}
    job_variables: dict[str, Any] = {}
    tags: list[str] = []
    pull_steps: list[dict[str, Any]] = []
    # None: prefect.yaml has no `schedules` key, so the server's schedules stay as they are.
    schedules: list[dict[str, Any]] | None = None

    @property
    def full_name(self) -> str:
        return f"{self.flow_name}/{self.name}"


class AppliedDeployment(BaseModel):
    """The outcome of an apply: the deployment's id, its UI link, and what changed.

    In a dry run `action` is what the apply would do, and nothing was written.
    """

    id: UUID | None
    full_name: str
    url: str
    action: Action
    changed_fields: list[str] = []
    changes: list[FieldChange] = []
    dry_run: bool = False


def read_parameter_schema(project_root: Path, spec: DeploymentSpec) -> dict[str, Any]:
    """Read the flow's parameter schema from its source, without importing its dependencies."""
    entrypoint = f"{project_root / spec.entrypoint_path}:{spec.function_name}"
    try:
        return parameter_schema_from_entrypoint(entrypoint).model_dump()
    except (SyntaxError, ValueError, TypeError) as exc:
        raise FlowSpecError(f"cannot read the parameters of {spec.entrypoint}: {exc}") from exc


def build_desired(
    project_root: Path,
    spec: DeploymentSpec,
    *,
    entrypoint: str,
    work_pool_name: str,
    work_queue_name: str,
    working_directory: str,
    job_variables: dict[str, Any],
    version: str | None,
) -> DesiredDeployment:
    """Assemble the desired deployment of one prefect.yaml entry; validates before anything is sent."""
    source: FlowSource = read_flow_source(project_root, spec)
    schema = read_parameter_schema(project_root, spec)
    unknown = sorted(set(spec.parameters) - set(schema.get("properties", {})))
    if unknown:
        raise FlowSpecError(
            f"prefect.yaml deployment {spec.name!r} sets parameters the flow does not take: "
            f"{', '.join(unknown)}; remove them or add them to {source.function_name}()"
        )
    return DesiredDeployment(
        flow_name=source.flow_name,
        name=spec.name,
        entrypoint=entrypoint,
        work_pool_name=work_pool_name,
        work_queue_name=work_queue_name,
        description=spec.description,
        version=version,
        parameters=spec.parameters,
        parameter_openapi_schema=schema,
        job_variables=job_variables,
        tags=sorted(spec.tags),
        pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": working_directory}}],
        schedules=normalise_schedules(spec.name, spec.schedules),
    )


def normalise_schedules(deployment: str, configs: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Validate prefect.yaml's schedules and give each a unique slug; None stays None."""
    if configs is None:
        return None
    schedules = [normalise_schedule(deployment, config) for config in configs]
    for index, schedule in enumerate(schedules):
        schedule["slug"] = schedule["slug"] or default_slug(index)
    slugs = [s["slug"] for s in schedules]
    duplicates = sorted({slug for slug in slugs if slugs.count(slug) > 1})
    if duplicates:
        raise FlowSpecError(f"schedules of {deployment!r} repeat the slug(s) {duplicates}; give each a unique slug")
    return schedules


def normalise_schedule(deployment: str, config: dict[str, Any]) -> dict[str, Any]:
    """Validate one prefect.yaml schedule and return it in the server's JSON shape."""
    known = {"cron", "interval", "rrule", "timezone", "day_or", "anchor_date", "active", "parameters", "slug"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise FlowSpecError(f"schedule of {deployment!r} has unknown keys {unknown}; allowed: {sorted(known)}")
    timezone = config.get("timezone")
    try:
        if "cron" in config:
            schedule: Any = CronSchedule(
                cron=config["cron"], timezone=timezone or "UTC", day_or=config.get("day_or", True)
            )
        elif "interval" in config:
            schedule = IntervalSchedule(
                interval=timedelta(seconds=float(config["interval"])),
                anchor_date=config.get("anchor_date") or "2020-01-01T00:00:00Z",
                timezone=timezone or "UTC",
            )
        elif "rrule" in config:
            schedule = RRuleSchedule(rrule=config["rrule"], timezone=timezone or "UTC")
        else:
            raise FlowSpecError(f"schedule of {deployment!r} needs one of cron, interval or rrule")
    except (ValidationError, ValueError) as exc:
        raise FlowSpecError(f"schedule of {deployment!r} is invalid: {exc}") from exc
    return {
        "schedule": json.loads(schedule.model_dump_json()),
        # None: keep the server's state (a schedule paused in the UI stays paused).
        "active": None if config.get("active") is None else bool(config["active"]),
        "parameters": dict(config.get("parameters") or {}),
        "slug": config.get("slug"),
    }


def deployment_url(deployment_id: UUID) -> str:
    """Return the UI link of a deployment."""
    settings = get_current_settings()
    base = settings.ui_url or str(settings.api.url or "").removesuffix("/api")
    return f"{base.rstrip('/')}/deployments/deployment/{deployment_id}"
