"""The ECS pool's template on a real server: read back, rendered by prefect-aws's own code.

The task definition the ECS worker would register is computed with prefect-aws's
ECSJobConfiguration and ECSWorker._prepare_task_definition, from the template bootstrap
built in memory and from the copy the Prefect server stores; both must agree. The env merge
uses Prefect's own resolve_for_flow_run on a real deployment and flow run.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect_aws import AwsCredentials
from prefect_aws.workers.ecs_worker import ECSJobConfiguration, ECSWorker

from blocks.ecs_task_settings import EcsTaskSettings
from meta_flows.pool_template import build_base_job_template
from tests.e2e.bootstrap_support import bootstrap, session_env, teardown

SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-url-AbCdEf"
API_KEY_SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prefect-key-AbCdEf"


@pytest.fixture(scope="module")
def template_env(stack_env: dict[str, str]) -> Iterator[dict[str, str]]:
    env = session_env("template")
    env.update(
        {
            "META_FLOWS_PLATFORM": "linux/arm64",
            "META_FLOWS_EPHEMERAL_STORAGE": "30",
            "META_FLOWS_CONTAINER_SECRETS": json.dumps({"DB_URL": SECRET}),
            "META_FLOWS_PREFECT_API_KEY_SECRET_ARN": API_KEY_SECRET,
            "META_FLOWS_POOL_ENV": json.dumps({"A": "pool", "B": "pool"}),
        }
    )
    created = bootstrap(env)
    assert created.returncode == 0, created.stdout + created.stderr
    yield env
    teardown(env)


async def render_task_definition(template: dict[str, Any], pool: str) -> dict[str, Any]:
    configuration = await ECSJobConfiguration.from_template_and_values(template, {"image": "registry/flow:tag"})
    flow_run = FlowRun(flow_id=UUID(int=1), id=UUID(int=2))
    return ECSWorker(work_pool_name=pool)._prepare_task_definition(configuration, "us-east-1", flow_run)


async def read_back(env: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return the template rebuilt from the stored blocks, and the pool's stored template."""
    settings = await EcsTaskSettings.aload(env["META_FLOWS_TASK_SETTINGS_BLOCK"])  # type: ignore[attr-defined]
    credentials = await AwsCredentials.aload(env["META_FLOWS_CREDENTIALS_BLOCK"])  # type: ignore[attr-defined]
    async with get_client() as client:
        pool = await client.read_work_pool(env["META_FLOWS_WORK_POOL"])
    return build_base_job_template(settings, credentials._block_document_id), pool.base_job_template


def test_pool_read_back_renders_same_task_definition(template_env: dict[str, str]) -> None:
    built, stored = asyncio.run(read_back(template_env))
    pool = template_env["META_FLOWS_WORK_POOL"]

    from_built = asyncio.run(render_task_definition(built, pool))
    from_stored = asyncio.run(render_task_definition(stored, pool))

    assert stored == built
    assert from_stored == from_built
    container = from_stored["containerDefinitions"][0]
    assert from_stored["runtimePlatform"] == {"cpuArchitecture": "ARM64", "operatingSystemFamily": "LINUX"}
    assert from_stored["ephemeralStorage"] == {"sizeInGiB": 30}
    assert {"name": "DB_URL", "valueFrom": SECRET} in container["secrets"]
    assert {"name": "PREFECT_API_KEY", "valueFrom": API_KEY_SECRET} in container["secrets"]
    assert container["logConfiguration"]["options"]["awslogs-group"] == f"/prefect/{template_env['META_FLOWS_CLUSTER']}"
    assert from_stored["executionRoleArn"].endswith(f":role/{template_env['META_FLOWS_CLUSTER']}-execution")
    assert (from_stored["cpu"], from_stored["memory"]) == ("1024", "2048")


async def resolve_env(env: dict[str, str]) -> dict[str, Any]:
    async with get_client() as client:
        pool = await client.read_work_pool(env["META_FLOWS_WORK_POOL"])
        flow_id = await client.create_flow_from_name(f"env-merge-{env['META_FLOWS_CLUSTER']}")
        deployment_id = await client.create_deployment(
            flow_id=flow_id,
            name="env-merge",
            work_pool_name=pool.name,
            # No API key secret here: prefect-aws 0.7.12 then deletes PREFECT_API_KEY from the
            # environment and raises KeyError when this process (a local server) has none.
            job_variables={
                "image": "registry/flow:tag",
                "env": {"B": "deployment", "C": "deployment"},
                "prefect_api_key_secret_arn": None,
            },
        )
        flow_run = await client.create_flow_run_from_deployment(deployment_id, job_variables={"env": {"C": "run"}})
        try:
            configuration = await ECSJobConfiguration.resolve_for_flow_run(
                flow_run, client=client, work_pool=pool, worker_name="env-merge-test"
            )
        finally:
            await client.delete_flow_run(flow_run.id)
            await client.delete_deployment(deployment_id)
    return configuration.env


def test_env_merges_pool_deployment_and_run(template_env: dict[str, str]) -> None:
    env = asyncio.run(resolve_env(template_env))

    assert env["A"] == "pool"
    assert env["B"] == "deployment"
    assert env["C"] == "run"
