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
    ensure_task_definition,
    family_for,
    needs_deployment_id,
    register,
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


def test_family_same_inputs_same_family() -> None:
    first = family_for("ecs-pool", template(), {"image": IMAGE}, "us-east-1")
    second = family_for("ecs-pool", template(), {"image": IMAGE}, "us-east-1")

    assert first == second


@pytest.mark.parametrize(
    ("pool", "job_variables", "region", "settings"),
    [
        ("ecs-pool", {"image": IMAGE[:-1] + "0"}, "us-east-1", {}),
        ("ecs-pool", {"image": IMAGE, "cpu": 1024}, "us-east-1", {}),
        ("ecs-pool", {"image": IMAGE}, "eu-west-1", {}),
        ("ecs-pool", {"image": IMAGE}, "us-east-1", {"container_memory": 1024}),
        ("other-pool", {"image": IMAGE}, "us-east-1", {}),
    ],
    ids=["image", "job-variable", "region", "pool-template", "pool-name"],
)
def test_family_changes_with_each_input(
    pool: str, job_variables: dict[str, Any], region: str, settings: dict[str, Any]
) -> None:
    base = family_for("ecs-pool", template(), {"image": IMAGE}, "us-east-1")
    base_settings = {"cluster": "c", "execution_role_arn": "arn:aws:iam::123456789012:role/e", "container_memory": 512}
    changed = build_base_job_template(EcsTaskSettings(**{**base_settings, **settings}), uuid4())

    assert family_for(pool, changed, job_variables, region) != base


def test_family_ignores_credentials_block_name() -> None:
    # The rendering drops the credentials block reference, so the family does too.
    first = template()
    second = template()
    second["variables"]["properties"]["aws_credentials"]["default"] = {"$ref": {"block_document_id": "other"}}

    assert family_for("ecs-pool", first, {"image": IMAGE}, "us-east-1") == family_for(
        "ecs-pool", second, {"image": IMAGE}, "us-east-1"
    )


def test_family_uses_only_allowed_characters() -> None:
    family = family_for("my pool.v2", template(), {"image": IMAGE}, "us-east-1")

    assert family.startswith("prefect_my-pool-v2_")
    assert all(c.isalnum() or c in "-_" for c in family)
    assert len(family) <= 255


def test_rendering_equals_worker_rendering() -> None:
    base = template()
    ours = render_task_definition(base, {"image": IMAGE}, "us-east-1")
    ours["family"] = family_for("ecs-pool", base, {"image": IMAGE}, "us-east-1")

    # What prefect-aws 0.7.12's worker builds for a flow run of the deployment.
    base["variables"]["properties"]["aws_credentials"].pop("default")
    values = {"image": IMAGE, "family": ours["family"]}
    # No placeholder needs the API, so a client that fails on use replaces the worker's.
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
def test_needs_deployment_id_without_log_prefix(job_variables: dict[str, Any], expected: bool) -> None:
    assert needs_deployment_id(job_variables, template()) is expected


class FakeEcs:
    """An ECS client whose RegisterTaskDefinition fails with `failure` when one is given.

    It stores what it registers, and DescribeTaskDefinition returns that.
    """

    def __init__(self, failure: ClientError | None = None) -> None:
        self.failure = failure
        self.calls = 0
        self.families: dict[str, dict[str, Any]] = {}

    def register_task_definition(self, **definition: Any) -> dict[str, Any]:
        self.calls += 1
        if self.failure is not None:
            raise self.failure
        arn = f"arn:aws:ecs:us-east-1:1:task-definition/{definition['family']}:1"
        self.families[definition["family"]] = {**definition, "taskDefinitionArn": arn, "status": "ACTIVE"}
        return {"taskDefinition": {"taskDefinitionArn": arn}}

    def describe_task_definition(self, taskDefinition: str) -> dict[str, Any]:  # noqa: N803 - boto3's name
        if taskDefinition not in self.families:
            error = {"Error": {"Code": "ClientException", "Message": "Unable to describe task definition."}}
            raise ClientError(error, "DescribeTaskDefinition")  # type: ignore[arg-type]
        return {"taskDefinition": self.families[taskDefinition]}


def test_ensure_registers_only_new_family(monkeypatch: pytest.MonkeyPatch) -> None:
    ecs = FakeEcs()
    monkeypatch.setattr(task_definitions, "aws_client", lambda service, region: ecs)
    rendered: list[str] = []

    def render() -> dict[str, Any]:
        rendered.append("rendered")
        return {"family": "pending", "containerDefinitions": [{"name": "prefect", "image": IMAGE}]}

    first = ensure_task_definition("us-east-1", "prefect_ecs-pool_0123", render)
    second = ensure_task_definition("us-east-1", "prefect_ecs-pool_0123", render)

    assert first.action == "registered"
    assert second.action == "unchanged"
    assert second.arn == first.arn
    assert rendered == ["rendered"]
    assert ecs.calls == 1
    assert ecs.families["prefect_ecs-pool_0123"]["family"] == "prefect_ecs-pool_0123"


def test_register_returns_arn() -> None:
    ecs = FakeEcs()

    assert register(ecs, {"family": "f"}).endswith("task-definition/f:1")
    assert ecs.calls == 1


def test_register_client_error_gives_guidance() -> None:
    ecs = FakeEcs(client_error("InvalidParameterException", "bad memory"))

    with pytest.raises(AwsError) as error:
        register(ecs, {"family": "f"})

    assert "ecs:RegisterTaskDefinition failed with InvalidParameterException: bad memory" in str(error.value)
