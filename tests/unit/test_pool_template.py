"""The ECS pool's base job template: built from the task settings, checked both ways."""

from __future__ import annotations

import copy
import uuid

import pytest

from blocks.ecs_task_settings import EcsTaskSettings
from meta_flows.errors import JobTemplateError
from meta_flows.pool_template import build_base_job_template, placeholders_of, validate_template

ROLE = "arn:aws:iam::123456789012:role/data-execution"
SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf"


def settings(**changes: object) -> EcsTaskSettings:
    values: dict[str, object] = {"cluster": "data", "execution_role_arn": ROLE}
    values.update(changes)
    return EcsTaskSettings(**values)  # type: ignore[arg-type]


def test_template_exposes_architecture_storage_and_secrets() -> None:
    template = build_base_job_template(
        settings(cpu_architecture="ARM64", ephemeral_storage=50, container_secrets={"DB_URL": SECRET}), uuid.uuid4()
    )
    properties = template["variables"]["properties"]
    task_definition = template["job_configuration"]["task_definition"]

    assert properties["cpu_architecture"]["default"] == "ARM64"
    assert properties["ephemeral_storage"]["default"] == 50
    assert properties["secrets"]["default"] == [{"name": "DB_URL", "valueFrom": SECRET}]
    assert task_definition["runtimePlatform"]["cpuArchitecture"] == "{{ cpu_architecture }}"
    assert task_definition["ephemeralStorage"] == {"sizeInGiB": "{{ ephemeral_storage }}"}
    assert task_definition["containerDefinitions"][0]["secrets"] == "{{ secrets }}"


def test_template_sets_api_key_secret_and_log_group() -> None:
    template = build_base_job_template(
        settings(prefect_api_key_secret_arn=SECRET, log_group="/prefect/data", log_region="us-east-1"), uuid.uuid4()
    )
    properties = template["variables"]["properties"]

    assert properties["prefect_api_key_secret_arn"]["default"] == SECRET
    assert properties["configure_cloudwatch_logs"]["default"] is True
    assert properties["cloudwatch_logs_options"]["default"]["awslogs-group"] == "/prefect/data"
    assert properties["cloudwatch_logs_options"]["default"]["awslogs-create-group"] == "false"


def test_template_without_storage_leaves_fargate_default() -> None:
    template = build_base_job_template(settings(), uuid.uuid4())

    assert "ephemeralStorage" not in template["job_configuration"]["task_definition"]
    assert "ephemeral_storage" not in template["variables"]["properties"]


def test_validate_template_rejects_undefined_placeholder() -> None:
    template = copy.deepcopy(build_base_job_template(settings(), uuid.uuid4()))
    template["job_configuration"]["task_definition"]["pidMode"] = "{{ pid_mode }}"

    with pytest.raises(JobTemplateError, match=r"undefined variables \['pid_mode'\]"):
        validate_template(template)


def test_validate_template_rejects_unused_variable() -> None:
    template = copy.deepcopy(build_base_job_template(settings(), uuid.uuid4()))
    template["variables"]["properties"]["orphan"] = {"type": "string"}

    with pytest.raises(JobTemplateError, match=r"variables \['orphan'\] that no placeholder uses"):
        validate_template(template)


def test_placeholders_skip_prefect_references() -> None:
    value = {"a": ["{{ cpu }}", "{{ prefect.variables.region }}"], "b": "x-{{ memory }}"}

    assert placeholders_of(value) == {"cpu", "memory"}
