"""ECS task definitions registered at deploy time, one family per distinct set of inputs.

prefect-aws 0.7.12's ECS worker keeps the task definition of each deployment in its memory
only, so every worker start registers a new revision, and a burst of first runs meets ECS's
RegisterTaskDefinition rate limit ("Too many concurrent attempts to create a new revision of
the specified family"). register-deployment therefore names the family by a hash of what the
task definition is rendered from: the pool's job template, the job variables (the image among
them), the region, and the Prefect and prefect-aws versions, whose code renders it. When the
family has no revision yet, it renders the task definition with the worker's own code and
registers it. The pool's template turns on `match_latest_revision_in_family`, so the worker
finds that revision and registers nothing.

Equal inputs render equal task definitions, so a deploy with unchanged inputs finds the family
already registered and renders nothing, which also spares it the import of prefect-aws (about
0.3 s). Deployments with the same image and settings share one family and one revision.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from types import SimpleNamespace
from typing import Any
from uuid import UUID

from botocore.exceptions import BotoCoreError, ClientError
from prefect.utilities.asyncutils import run_coro_as_sync

from meta_flows.aws.clients import aws_client
from meta_flows.aws.errors import describe_aws_failure
from meta_flows.errors import AwsError

FAMILY_HASH_LENGTH = 16
# ECS family names: up to 255 letters, digits, '-' and '_' (RegisterTaskDefinition reference).
FAMILY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
FAMILY_PREFIX_LENGTH = 200
# Part of each family's hash: raise it when render_task_definition changes what it renders.
RENDERING_VERSION = 1
# The versions of the code that renders, read once at import: importlib.metadata is not safe to
# call from several threads at once, and deploy-all-flows names families in parallel tasks.
RENDERING_PACKAGES = {"prefect": version("prefect"), "prefect_aws": version("prefect-aws")}


class _NoApiClient:
    """A stand-in Prefect client that fails on use: rendering must not need the API."""

    def __getattr__(self, name: str) -> Any:
        raise AwsError(
            "the ECS pool's template refers to Prefect variables or blocks inside the task definition; "
            "register-deployment cannot render it ahead of the worker"
        )


_NO_API_CLIENT: Any = _NoApiClient()
_family_locks: dict[str, threading.Lock] = {}
_family_locks_guard = threading.Lock()


@dataclass(frozen=True)
class TaskDefinitionResult:
    """The family of a deployment's task definition and whether this deploy registered it."""

    family: str
    arn: str
    action: str  # "registered" or "unchanged"


def family_lock(family: str) -> threading.Lock:
    """Return the lock that serialises this process's registrations in one family."""
    with _family_locks_guard:
        return _family_locks.setdefault(family, threading.Lock())


def render_task_definition(
    base_job_template: dict[str, Any], job_variables: dict[str, Any], region: str
) -> dict[str, Any]:
    """Render the task definition the ECS worker will build for these job variables.

    It runs prefect-aws's own rendering (`ECSJobConfiguration` and
    `ECSWorker._prepare_task_definition`), so the worker later compares equal content. The
    credentials block reference is dropped first: the task definition does not use it, and
    resolving it would need the Prefect API.
    """
    from prefect_aws.workers.ecs_worker import ECSJobConfiguration, ECSWorker  # about 0.3 s to import

    template = rendering_template(base_job_template)
    values = {**job_variables, "family": job_variables.get("family") or "pending"}
    # Prefect resolves `{{ prefect.variables.* }}` and block placeholders through the API; a
    # template with none of them in the task definition never touches this client.
    rendering = ECSJobConfiguration.from_template_and_values(template, values, client=_NO_API_CLIENT)
    configuration = run_coro_as_sync(rendering)
    worker = SimpleNamespace(
        _work_pool_name="pending", _get_or_generate_family=lambda definition, flow_run: definition["family"]
    )
    flow_run = SimpleNamespace(deployment_id=None, flow_id=UUID(int=0))
    return ECSWorker._prepare_task_definition(worker, configuration, region, flow_run)  # type: ignore[arg-type]


def rendering_template(base_job_template: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of the pool's template without the credentials block reference."""
    template = copy.deepcopy(base_job_template)
    template["variables"]["properties"].get("aws_credentials", {}).pop("default", None)
    return template


def family_for(work_pool: str, base_job_template: dict[str, Any], job_variables: dict[str, Any], region: str) -> str:
    """Return the family named by a hash of everything its task definition is rendered from."""
    inputs = {
        "template": rendering_template(base_job_template),
        "job_variables": job_variables,
        "region": region,
        "packages": RENDERING_PACKAGES,
        "rendering": RENDERING_VERSION,
    }
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()
    prefix = FAMILY_UNSAFE.sub("-", f"prefect_{work_pool}")[:FAMILY_PREFIX_LENGTH]
    return f"{prefix}_{digest[:FAMILY_HASH_LENGTH]}"


def needs_deployment_id(job_variables: dict[str, Any], base_job_template: dict[str, Any]) -> bool:
    """Return True when the worker's task definition would name the deployment id.

    With CloudWatch logs on and no log prefix, the worker puts the deployment id in the log
    stream prefix, so its task definition cannot be known before the deployment exists.
    """
    properties = base_job_template["variables"]["properties"]

    def value(name: str) -> Any:
        return job_variables.get(name, properties.get(name, {}).get("default"))

    return bool(value("configure_cloudwatch_logs")) and not value("cloudwatch_logs_prefix")


def ensure_task_definition(region: str, family: str, render: Callable[[], dict[str, Any]]) -> TaskDefinitionResult:
    """Register the task definition `render` returns, unless `family` has an ACTIVE revision.

    The family's name is a hash of the rendering inputs (`family_for`), so a revision in it was
    rendered from the same inputs, by this code or by the worker. `render` runs only when the
    family has none.
    """
    ecs = aws_client("ecs", region)
    with family_lock(family):
        latest = describe_latest(ecs, family)
        if latest is not None:
            return TaskDefinitionResult(family=family, arn=str(latest["taskDefinitionArn"]), action="unchanged")
        arn = register(ecs, {**render(), "family": family})
    return TaskDefinitionResult(family=family, arn=arn, action="registered")


def describe_latest(ecs: Any, family: str) -> dict[str, Any] | None:
    """Return the latest ACTIVE revision of `family`, or None when the family has none."""
    try:
        reply = ecs.describe_task_definition(taskDefinition=family)
    except ClientError as exc:
        # ECS has no dedicated error code for a missing family, so it returns ClientException.
        if exc.response.get("Error", {}).get("Code") == "ClientException":
            return None
        raise describe_aws_failure("ecs:DescribeTaskDefinition", exc) from exc
    except BotoCoreError as exc:
        raise describe_aws_failure("ecs:DescribeTaskDefinition", exc) from exc
    definition: dict[str, Any] = reply["taskDefinition"]
    return definition if definition.get("status") == "ACTIVE" else None


def register(ecs: Any, task_definition: dict[str, Any]) -> str:
    """Register the task definition and return its ARN.

    The client retries ECS's concurrent-revision ClientException and throttling with jitter
    (meta_flows/aws/retries.py); the family lock above keeps this process from causing either.
    """
    try:
        reply = ecs.register_task_definition(**task_definition)
    except (ClientError, BotoCoreError) as exc:
        raise describe_aws_failure("ecs:RegisterTaskDefinition", exc) from exc
    return str(reply["taskDefinition"]["taskDefinitionArn"])
