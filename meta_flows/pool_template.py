"""The ECS work pool's base job template, built from the task settings block in one place.

It starts from prefect-aws's own default template and sets the defaults of its variables, so
the ECS worker renders every RunTask request from values the Prefect UI shows.
"""

from __future__ import annotations

import copy
import re
from typing import Any
from uuid import UUID

from blocks.ecs_task_settings import EcsTaskSettings
from meta_flows.errors import FlowSpecError, JobTemplateError

# Job variables a prefect.yaml entry must not set, and the meta-flow that sets each one. The
# family is the task definition family that register-deployment registers (task_definitions.py).
RESERVED_JOB_VARIABLES = {"image": "build-and-push-image", "family": "register-deployment"}
PLACEHOLDER = re.compile(r"\{\{\s*([\w.]+)\s*\}\}")


def default_ecs_template() -> dict[str, Any]:
    # Imported here: prefect_aws takes about a second to import, and only bootstrap needs it.
    from prefect_aws.workers.ecs_worker import ECSWorker

    return copy.deepcopy(ECSWorker.get_default_base_job_template())


def network_configuration(settings: EcsTaskSettings) -> dict[str, Any] | None:
    """Return the awsvpcConfiguration, or None to let the worker use the default VPC's subnets.

    prefect-aws 0.7.12 wraps this value in `awsvpcConfiguration` itself, checks its subnets
    against `vpc_id`, and rejects it without one, so the template's vpc_id must be set too.
    """
    if not settings.subnets:
        return None
    config: dict[str, Any] = {
        "subnets": list(settings.subnets),
        "assignPublicIp": "ENABLED" if settings.assign_public_ip else "DISABLED",
    }
    if settings.security_groups:
        config["securityGroups"] = list(settings.security_groups)
    return config


def build_base_job_template(settings: EcsTaskSettings, credentials_block_id: UUID) -> dict[str, Any]:
    """Build the ECS pool's base job template from the task settings and the credentials block."""
    template = default_ecs_template()
    properties = template["variables"]["properties"]
    defaults: dict[str, Any] = {
        "aws_credentials": {"$ref": {"block_document_id": str(credentials_block_id)}},
        "cluster": settings.cluster,
        "cpu": settings.cpu,
        "memory": settings.memory,
        "launch_type": settings.launch_type,
        "execution_role_arn": settings.execution_role_arn,
        "task_role_arn": settings.task_role_arn,
        "vpc_id": settings.vpc_id,
        "network_configuration": network_configuration(settings),
        "prefect_api_key_secret_arn": settings.prefect_api_key_secret_arn,
        # Prefect 3 merges this default with a deployment's and a run's `env`, key by key.
        "env": settings.env or None,
    }
    for name, value in defaults.items():
        if value is not None:
            properties[name]["default"] = value
    # The worker reuses the latest revision of the family when it is equal, instead of
    # registering one more revision after each worker start.
    properties["match_latest_revision_in_family"]["default"] = True

    task_definition = template["job_configuration"]["task_definition"]
    add_container_secrets(properties, task_definition)
    container = task_definition["containerDefinitions"][0]
    if settings.container_memory is not None:
        # A hard memory limit on the flow container. It also lets moto run Fargate tasks, because
        # moto 5.2.5's RunTask fails when memory is set at task level only.
        add_variable(
            template,
            "container_memory",
            "Container memory",
            "Hard memory limit of the flow container in MiB.",
            {"type": "integer"},
            settings.container_memory,
        )
        container["memory"] = "{{ container_memory }}"
    add_variable(
        template,
        "cpu_architecture",
        "CPU architecture",
        "Fargate CPU architecture of the task.",
        {"type": "string", "enum": ["X86_64", "ARM64"]},
        settings.cpu_architecture,
    )
    task_definition["runtimePlatform"] = {"cpuArchitecture": "{{ cpu_architecture }}", "operatingSystemFamily": "LINUX"}
    if settings.ephemeral_storage is not None:
        add_variable(
            template,
            "ephemeral_storage",
            "Ephemeral storage",
            "Fargate ephemeral storage in GiB (21-200).",
            {"type": "integer", "minimum": 21, "maximum": 200},
            settings.ephemeral_storage,
        )
        task_definition["ephemeralStorage"] = {"sizeInGiB": "{{ ephemeral_storage }}"}
    # Container secrets from the settings; deployments may replace the list with their own.
    properties["secrets"]["default"] = [
        {"name": name, "valueFrom": arn} for name, arn in sorted(settings.container_secrets.items())
    ]
    if settings.log_group is not None:
        properties["configure_cloudwatch_logs"]["default"] = True
        # awslogs-create-group false: the group exists (bootstrap made it), so no role needs
        # logs:CreateLogGroup.
        properties["cloudwatch_logs_options"]["default"] = {
            "awslogs-group": settings.log_group,
            "awslogs-region": settings.log_region or "",
            "awslogs-create-group": "false",
        }
        # A fixed stream prefix: the worker's default prefix names the deployment id, which would
        # make every deployment's task definition unknowable before it exists (task_definitions.py).
        # Streams stay unique, since ECS appends the container name and task id to the prefix.
        properties["cloudwatch_logs_prefix"]["default"] = "prefect-flows"
    validate_template(template)
    return template


def add_container_secrets(properties: dict[str, Any], task_definition: dict[str, Any]) -> None:
    """Add the `secrets` variable: container secrets that ECS resolves from their ARNs at start.

    Only the ARNs pass through Prefect and RunTask; the values go from Secrets Manager or SSM
    straight to the container. The worker drops the key when the list is empty. The execution
    role bootstrap creates may read the ARNs of META_FLOWS_CONTAINER_SECRETS only.
    """
    properties["secrets"] = {
        "title": "Secrets",
        "description": (
            "Container secrets as a list of {name, valueFrom}; valueFrom is a Secrets Manager or SSM "
            "parameter ARN. The execution role needs read access to each."
        ),
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "valueFrom": {"type": "string"}},
            "required": ["name", "valueFrom"],
        },
        "default": [],
    }
    task_definition["containerDefinitions"][0]["secrets"] = "{{ secrets }}"


def add_variable(
    template: dict[str, Any], name: str, title: str, description: str, schema: dict[str, Any], default: Any
) -> None:
    """Add one variable to the template's schema, with its default."""
    template["variables"]["properties"][name] = {
        "title": title,
        "description": description,
        **schema,
        "default": default,
    }


def placeholders_of(value: Any) -> set[str]:
    """Return the variable names `{{ name }}` placeholders use anywhere in `value`.

    Placeholders under `prefect.` (Prefect variables and blocks) are resolved by Prefect itself.
    """
    if isinstance(value, str):
        return {name for name in PLACEHOLDER.findall(value) if not name.startswith("prefect.")}
    if isinstance(value, dict):
        return set().union(*(placeholders_of(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(placeholders_of(v) for v in value)) if value else set()
    return set()


def validate_template(template: dict[str, Any]) -> None:
    """Check the template both ways: each placeholder has a variable, and each variable is used."""
    variables = set(template["variables"]["properties"])
    used = placeholders_of(template["job_configuration"])
    undefined = sorted(used - variables)
    unused = sorted(variables - used)
    if undefined:
        raise JobTemplateError(f"base job template uses undefined variables {undefined}: add them to 'variables'")
    if unused:
        raise JobTemplateError(
            f"base job template defines variables {unused} that no placeholder uses: remove them or use them "
            "in 'job_configuration'"
        )


def validate_job_variables(deployment: str, job_variables: dict[str, Any], template: dict[str, Any]) -> None:
    """Reject job variables the pool's template does not define, before anything is registered."""
    allowed = set(template["variables"]["properties"])
    dotted = sorted(key for key in job_variables if "." in key)
    if dotted:
        raise FlowSpecError(
            f"deployment {deployment!r}: job variable keys {dotted} contain '.'; write nested values "
            "as YAML mappings, e.g. env: {FOO: bar}"
        )
    reserved = sorted(set(RESERVED_JOB_VARIABLES) & set(job_variables))
    if reserved:
        raise FlowSpecError(
            f"deployment {deployment!r}: job variable {reserved[0]!r} is set by "
            f"{RESERVED_JOB_VARIABLES[reserved[0]]}; remove it from prefect.yaml"
        )
    if "task_definition_arn" in job_variables:
        raise FlowSpecError(
            f"deployment {deployment!r}: job variable 'task_definition_arn' fixes the task definition, and "
            "ECS cannot override the image of a fixed task definition, so the built image would never "
            "run; remove task_definition_arn and set cpu, memory or env instead"
        )
    check_network_variables(deployment, job_variables, template)
    unknown = sorted(set(job_variables) - allowed)
    if unknown:
        raise FlowSpecError(
            f"deployment {deployment!r}: unknown job variables {unknown}; the ECS pool defines "
            f"{', '.join(sorted(allowed))}"
        )


def check_network_variables(deployment: str, job_variables: dict[str, Any], template: dict[str, Any]) -> None:
    """Reject a network_configuration job variable without subnets or without a VPC to check them in.

    prefect-aws reads `network_configuration` as the awsvpcConfiguration itself and requires
    `vpc_id` with it; subnets outside that VPC and missing security groups are checked against
    EC2 by the caller.
    """
    network = job_variables.get("network_configuration")
    if network is None:
        return
    if not isinstance(network, dict) or not network.get("subnets"):
        raise FlowSpecError(
            f"deployment {deployment!r}: job variable network_configuration lists no subnets; give "
            "subnets: [subnet-...] (and securityGroups), or remove it to use the pool's network"
        )
    properties = template["variables"]["properties"]
    if not (job_variables.get("vpc_id") or properties.get("vpc_id", {}).get("default")):
        raise FlowSpecError(
            f"deployment {deployment!r}: job variable network_configuration needs vpc_id, the VPC its "
            "subnets belong to; add vpc_id: vpc-... beside it"
        )
