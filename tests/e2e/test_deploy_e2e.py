"""End to end on the local stack: bootstrap, deploy through deploy-flow, run on ECS, redeploy.

Every part is real: the Prefect server, moto over HTTP, the registry with its login, the Docker
engine, prefect-aws's ECS worker and the stack's task runner. Tests in this module share one
session and run in file order, since each builds on the deploys before it.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from typing import Any

import boto3
import pytest

from tests.e2e.conftest import run_command, wait_for
from tests.e2e.helpers import (
    api_request,
    create_flow_run,
    read_deployment,
    registry_digest,
    registry_tags,
    runner_record,
    wait_for_final_state,
)

DEPLOY_TIMEOUT = 900
RUN_TIMEOUT = 300


def output_of(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


def test_bootstrap_creates_aws_resources_and_pools(
    stack_env: dict[str, str], bootstrap_outputs: list[subprocess.CompletedProcess[str]]
) -> None:
    first = bootstrap_outputs[0].stdout
    prefix = stack_env["META_FLOWS_REPOSITORY_PREFIX"]
    assert re.search(rf"ECS cluster\s+{stack_env['META_FLOWS_CLUSTER']}\s+created", first)
    assert re.search(rf"ECR repository\s+{prefix}/hello\s+created", first)
    assert re.search(rf"work pool \(ecs\)\s+{stack_env['META_FLOWS_WORK_POOL']}\s+created", first)
    assert re.search(r"deployment\s+deploy-flow/default\s+(created|updated)", first)

    ecr = boto3.client("ecr", region_name=stack_env["AWS_REGION"], endpoint_url=stack_env["AWS_ENDPOINT_URL"])
    names = {r["repositoryName"] for r in ecr.describe_repositories()["repositories"]}
    assert {f"{prefix}/hello", f"{prefix}/report"} <= names
    ecs = boto3.client("ecs", region_name=stack_env["AWS_REGION"], endpoint_url=stack_env["AWS_ENDPOINT_URL"])
    clusters = ecs.describe_clusters(clusters=[stack_env["META_FLOWS_CLUSTER"]], include=["TAGS"])["clusters"]
    assert clusters[0]["status"] == "ACTIVE"
    assert {"key": "managed-by", "value": "meta-flows"} in clusters[0]["tags"]


def test_bootstrap_second_run_reports_every_item_unchanged(
    bootstrap_outputs: list[subprocess.CompletedProcess[str]],
) -> None:
    second = bootstrap_outputs[1].stdout
    table = second.split("\n\n")[0]
    rows = [line for line in table.splitlines()[1:] if line and not line.startswith("Nothing to do")]

    assert len(rows) >= 10
    assert all(line.rstrip().endswith("unchanged") for line in rows), second
    assert "Nothing to do: every item is unchanged." in second


def test_pool_template_comes_from_task_settings_block(stack_env: dict[str, str], bootstrap_outputs: Any) -> None:
    from tests.e2e.helpers import api_get

    pool = api_get(stack_env, f"/work_pools/{stack_env['META_FLOWS_WORK_POOL']}")
    properties = pool["base_job_template"]["variables"]["properties"]

    assert pool["type"] == "ecs"
    assert properties["cluster"]["default"] == stack_env["META_FLOWS_CLUSTER"]
    assert properties["execution_role_arn"]["default"].endswith(f":role/{stack_env['META_FLOWS_CLUSTER']}-execution")
    assert "block_document_id" in properties["aws_credentials"]["default"]["$ref"]


def run_deployment_from_cli(stack_env: dict[str, str], deployment: str, parameters: dict[str, Any]) -> str:
    """Start a flow run with `prefect deployment run` and return its id."""
    started = run_command(
        [sys.executable, "-m", "prefect", "deployment", "run", deployment, "--params", json.dumps(parameters)],
        stack_env,
        timeout=120,
    )
    assert started.returncode == 0, output_of(started)
    flow_run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", started.stdout)
    assert flow_run_id, started.stdout
    return flow_run_id.group(1)


def test_deploy_flow_started_with_prefect_cli_completes(stack_env: dict[str, str], workers: dict[str, str]) -> None:
    flow_run_id = run_deployment_from_cli(stack_env, "deploy-flow/default", {"flow": "hello"})

    flow_run = wait_for_final_state(stack_env, flow_run_id, DEPLOY_TIMEOUT)

    assert flow_run["state_type"] == "COMPLETED", f"deploy-flow ended {flow_run['state_name']}; see {workers['logs']}"
    deployment = read_deployment(stack_env, "hello/hello")
    image = deployment["job_variables"]["image"]
    repository = f"{stack_env['META_FLOWS_REGISTRY_HOST']}/{stack_env['META_FLOWS_REPOSITORY_PREFIX']}/hello"
    assert image.startswith(f"{repository}:")
    assert deployment["work_pool_name"] == stack_env["META_FLOWS_WORK_POOL"]
    assert registry_digest(stack_env, image) is not None


def test_deploy_all_from_cli_completes(stack_env: dict[str, str], workers: dict[str, str]) -> None:
    # deploy-all-flows is the one async meta-flow; this runs it as the deployer worker does.
    before = read_deployment(stack_env, "hello/hello")
    flow_run_id = run_deployment_from_cli(stack_env, "deploy-all-flows/default", {"flows": ["hello"], "concurrency": 2})

    flow_run = wait_for_final_state(stack_env, flow_run_id, DEPLOY_TIMEOUT)

    ended = flow_run["state_name"]
    assert flow_run["state_type"] == "COMPLETED", f"deploy-all-flows ended {ended}; see {workers['logs']}"
    artifacts_of_run = {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}}
    summary = api_request(stack_env, "POST", "/artifacts/filter", artifacts_of_run)
    assert [a["key"] for a in summary] == ["deploy-all-flows"]
    assert "1 deployed, 0 failed." in summary[0]["data"]
    assert read_deployment(stack_env, "hello/hello")["job_variables"]["image"] == before["job_variables"]["image"]


def test_flow_run_completes_from_the_pushed_image(stack_env: dict[str, str], workers: dict[str, str]) -> None:
    deployment = read_deployment(stack_env, "hello/hello")
    image = deployment["job_variables"]["image"]
    pushed_digest = registry_digest(stack_env, image)

    flow_run_id = create_flow_run(stack_env, deployment["id"], {"name": "end-to-end"})
    flow_run = wait_for_final_state(stack_env, flow_run_id, RUN_TIMEOUT)

    assert flow_run["state_type"] == "COMPLETED", f"flow run ended {flow_run['state_name']}; see {workers['logs']}"
    record = wait_for(lambda: runner_record(stack_env, flow_run_id), 30, "task runner record of the flow run")
    assert record["image"] == image
    assert record["exit_code"] == 0
    assert record["image_digest"] == pushed_digest
    assert f"cluster/{stack_env['META_FLOWS_CLUSTER']}" in record["cluster_arn"]


def test_deploy_cli_registers_flow_with_uninstalled_dependency(stack_env: dict[str, str], workers: Any) -> None:
    assert importlib.util.find_spec("tabulate") is None, "tabulate must not be installed where the deployer runs"

    result = run_command([sys.executable, "-m", "meta_flows.deploy", "report"], stack_env, timeout=DEPLOY_TIMEOUT)

    assert result.returncode == 0, output_of(result)
    assert re.search(r"^image:\s+127\.0\.0\.1:5000/.+/report:[0-9a-f]{16}$", result.stdout, re.M)
    assert re.search(r"^id:\s+[0-9a-f-]{36}$", result.stdout, re.M)
    assert re.search(r"^link:\s+http://127\.0\.0\.1:4200/deployments/deployment/[0-9a-f-]{36}$", result.stdout, re.M)
    deployment = read_deployment(stack_env, "daily-report/daily")
    properties = deployment["parameter_openapi_schema"]["properties"]
    assert properties["threshold"]["type"] == "number"
    assert properties["values"]["type"] == "array"
    assert properties["include_rows"]["type"] == "boolean"
    assert properties["max_rows"]["default"] == 10
    assert deployment["parameters"] == {"title": "Daily report", "threshold": 2.0}
    assert deployment["job_variables"]["env"] == {"REPORT_FORMAT": "github"}
    assert [s["active"] for s in deployment["schedules"]] == [False]
    assert deployment["schedules"][0]["schedule"]["cron"] == "0 6 * * *"


def test_report_flow_run_with_parameters_completes(stack_env: dict[str, str], workers: dict[str, str]) -> None:
    deployment = read_deployment(stack_env, "daily-report/daily")

    flow_run_id = create_flow_run(stack_env, deployment["id"], {"values": [1.0, 5.0], "max_rows": 1})
    flow_run = wait_for_final_state(stack_env, flow_run_id, RUN_TIMEOUT)

    assert flow_run["state_type"] == "COMPLETED", f"flow run ended {flow_run['state_name']}; see {workers['logs']}"
    record = wait_for(lambda: runner_record(stack_env, flow_run_id), 30, "task runner record of the flow run")
    assert record["image_digest"] == registry_digest(stack_env, deployment["job_variables"]["image"])


def test_redeploy_unchanged_flow_builds_and_pushes_nothing(stack_env: dict[str, str], workers: Any) -> None:
    repository = f"{stack_env['META_FLOWS_REPOSITORY_PREFIX']}/hello"
    before = read_deployment(stack_env, "hello/hello")
    tags_before = registry_tags(stack_env, repository)

    result = run_command([sys.executable, "-m", "meta_flows.deploy", "hello"], stack_env, timeout=DEPLOY_TIMEOUT)

    assert result.returncode == 0, output_of(result)
    assert "outcome:    already in the registry: not built, not pushed" in result.stdout
    assert "deployment: hello/hello (unchanged)" in result.stdout
    after = read_deployment(stack_env, "hello/hello")
    assert after["updated"] == before["updated"]
    assert registry_tags(stack_env, repository) == tags_before


@pytest.mark.parametrize(
    ("flow", "expected"),
    [
        ("missing-flow", "flow folder flows/missing-flow not found; available flows: hello, report"),
        ("../meta_flows", "is not a flow folder name"),
    ],
)
def test_deploy_invalid_flow_fails_before_any_change(stack_env: dict[str, str], flow: str, expected: str) -> None:
    ecr = boto3.client("ecr", region_name=stack_env["AWS_REGION"], endpoint_url=stack_env["AWS_ENDPOINT_URL"])
    repositories_before = sorted(r["repositoryName"] for r in ecr.describe_repositories()["repositories"])

    result = run_command([sys.executable, "-m", "meta_flows.deploy", flow], stack_env, timeout=120)

    assert result.returncode == 1
    assert expected in result.stderr
    assert sorted(r["repositoryName"] for r in ecr.describe_repositories()["repositories"]) == repositories_before
