"""Task definitions rendered at deploy time must equal what prefect-aws's ECS worker renders."""

from __future__ import annotations

import logging
from typing import Any
from uuid import uuid4

import pytest
from botocore.exceptions import ClientError
from prefect.utilities.asyncutils import run_coro_as_sync
from prefect_aws.workers.ecs_worker import ECSJobConfiguration, ECSWorker

from blocks.ecs_task_settings import EcsTaskSettings
from meta_flows import task_definitions
from meta_flows.errors import AwsError
from meta_flows.pool_template import build_base_job_template
from meta_flows.task_definitions import (
    CONCURRENT_REVISION_MESSAGE,
    family_for,
    is_concurrent_revision_error,
    needs_deployment_id,
    register_with_retries,
    render_task_definition,
)

IMAGE = "127.0.0.1:5000/prefect-flows/hello:0123456789abcdef"
LOGGER = logging.getLogger("test")


def template(**overrides: Any) -> dict[str, Any]:
    settings = EcsTaskSettings(
        cluster="c", execution_role_arn="arn:aws:iam::123456789012:role/e", container_memory=512, **overrides
    )
    return build_base_job_template(settings, uuid4())


def client_error(code: str, message: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, "RegisterTaskDefinition")


def test_family_same_content_same_family() -> None:
    first = render_task_definition(template(), {"image": IMAGE}, "us-east-1")
    second = render_task_definition(template(), {"image": IMAGE}, "us-east-1")

    assert family_for("ecs-pool", first) == family_for("ecs-pool", second)


def test_family_changes_with_image() -> None:
    first = render_task_definition(template(), {"image": IMAGE}, "us-east-1")
    second = render_task_definition(template(), {"image": IMAGE[:-1] + "0"}, "us-east-1")

    assert family_for("ecs-pool", first) != family_for("ecs-pool", second)


def test_family_uses_only_allowed_characters() -> None:
    family = family_for("my pool.v2", render_task_definition(template(), {"image": IMAGE}, "us-east-1"))

    assert family.startswith("prefect_my-pool-v2_")
    assert all(c.isalnum() or c in "-_" for c in family)
    assert len(family) <= 255


def test_rendering_equals_worker_rendering() -> None:
    base = template()
    ours = render_task_definition(base, {"image": IMAGE}, "us-east-1")
    ours["family"] = family_for("ecs-pool", ours)

    # What prefect-aws 0.7.12's worker builds for a flow run of the deployment.
    base["variables"]["properties"]["aws_credentials"].pop("default")
    values = {"image": IMAGE, "family": ours["family"]}
    # No placeholder needs the API, so a client that fails on use stands in for the worker's.
    rendering = ECSJobConfiguration.from_template_and_values(base, values, client=task_definitions._NO_API_CLIENT)
    configuration = run_coro_as_sync(rendering)
    # The worker's own methods, without its __init__, which would start a temporary Prefect server.
    worker = ECSWorker.__new__(ECSWorker)
    worker._work_pool_name = "ecs-pool"
    flow_run = type("FlowRun", (), {"deployment_id": uuid4(), "flow_id": uuid4()})()
    theirs = worker._prepare_task_definition(configuration, "us-east-1", flow_run)  # type: ignore[arg-type]

    assert theirs == ours
    assert worker._task_definitions_equal(theirs, ours, LOGGER)


def test_pool_template_matches_latest_revision() -> None:
    properties = template()["variables"]["properties"]

    assert properties["match_latest_revision_in_family"]["default"] is True


@pytest.mark.parametrize(
    ("job_variables", "expected"),
    [
        ({}, False),
        ({"configure_cloudwatch_logs": True}, True),
        ({"configure_cloudwatch_logs": True, "cloudwatch_logs_prefix": "flows"}, False),
    ],
)
def test_needs_deployment_id_only_for_default_log_prefix(job_variables: dict[str, Any], expected: bool) -> None:
    assert needs_deployment_id(job_variables, template()) is expected


def test_concurrent_revision_error_matched_by_code_and_message() -> None:
    assert is_concurrent_revision_error(client_error("ClientException", CONCURRENT_REVISION_MESSAGE + " of it."))
    assert not is_concurrent_revision_error(client_error("ClientException", "Family not found"))
    assert not is_concurrent_revision_error(client_error("ThrottlingException", CONCURRENT_REVISION_MESSAGE))


class FakeEcs:
    """An ECS client whose RegisterTaskDefinition fails with `failures` first."""

    def __init__(self, failures: list[ClientError]) -> None:
        self.failures = failures
        self.calls = 0

    def register_task_definition(self, **definition: Any) -> dict[str, Any]:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return {
            "taskDefinition": {"taskDefinitionArn": f"arn:aws:ecs:us-east-1:1:task-definition/{definition['family']}:1"}
        }


def test_register_retries_concurrent_revision_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(task_definitions.time, "sleep", lambda seconds: None)
    ecs = FakeEcs([client_error("ClientException", CONCURRENT_REVISION_MESSAGE + " of the specified family.")] * 2)

    arn = register_with_retries(ecs, {"family": "f"}, LOGGER)

    assert arn.endswith("task-definition/f:1")
    assert ecs.calls == 3


def test_register_gives_up_after_max_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(task_definitions.time, "sleep", lambda seconds: None)
    throttle = client_error("ClientException", CONCURRENT_REVISION_MESSAGE + " of the specified family.")
    ecs = FakeEcs([throttle] * task_definitions.REGISTER_ATTEMPTS)

    with pytest.raises(AwsError) as error:
        register_with_retries(ecs, {"family": "f"}, LOGGER)

    assert "ecs:RegisterTaskDefinition failed with ClientException" in str(error.value)
    assert ecs.calls == task_definitions.REGISTER_ATTEMPTS


def test_register_other_client_error_not_retried() -> None:
    ecs = FakeEcs([client_error("InvalidParameterException", "bad memory")])

    with pytest.raises(AwsError) as error:
        register_with_retries(ecs, {"family": "f"}, LOGGER)

    assert "InvalidParameterException: bad memory" in str(error.value)
    assert ecs.calls == 1
