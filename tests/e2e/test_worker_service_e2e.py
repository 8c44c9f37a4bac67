"""The ECS worker as an ECS service, on the local stack.

bootstrap creates the service and its task definition in the emulator. moto 5.2.5 records a
service's desiredCount but starts no task for it, so this test starts one itself: RunTask of
the service's task definition with startedBy set to the service name, as ECS's scheduler
would. The stack's task runner then runs the worker container, which must poll the pool.
"""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Iterator

import docker
import pytest
import requests

from meta_flows.aws.ecr import get_registry_login
from meta_flows.images import engine, registry
from tests.e2e.bootstrap_support import aws, bootstrap, rows_of, session_env, teardown
from tests.e2e.conftest import wait_for

WORKER_REPOSITORY = "devstack/prefect-aws-worker"
WORKER_TAG = "prefect-3.9.1-prefect-aws-0.7.12"
WORKER_ONLINE_SECONDS = 180
DOCKERFILE = """ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN pip install "prefect-aws==0.7.12"
"""


def worker_image(env: dict[str, str]) -> str:
    """Build and push an image with Prefect and prefect-aws, unless the registry has it already."""
    host = env["META_FLOWS_REGISTRY_HOST"]
    login = get_registry_login(env["AWS_REGION"])
    if registry.find_manifest_digest(host, WORKER_REPOSITORY, WORKER_TAG, login) is None:
        context = io.BytesIO()
        with tarfile.open(fileobj=context, mode="w") as tar:
            data = DOCKERFILE.encode()
            info = tarfile.TarInfo("Dockerfile")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        client = engine.connect_engine()
        reference = f"{host}/{WORKER_REPOSITORY}:{WORKER_TAG}"
        engine.build_image(
            client, context.getvalue(), reference, {"BASE_IMAGE": env["META_FLOWS_BASE_IMAGE"]}, {}, lambda _: None
        )
        engine.push_image(client, f"{host}/{WORKER_REPOSITORY}", WORKER_TAG, login, lambda _: None)
    return f"{host}/{WORKER_REPOSITORY}:{WORKER_TAG}"


@pytest.fixture(scope="module")
def service_env(stack_env: dict[str, str]) -> Iterator[dict[str, str]]:
    env = session_env("service")
    env["META_FLOWS_WORKER_SERVICE"] = "true"
    env["META_FLOWS_WORKER_IMAGE"] = worker_image(env)
    yield env
    teardown(env)


def pool_workers(env: dict[str, str]) -> list[dict[str, object]]:
    reply = requests.post(
        f"{env['PREFECT_API_URL']}/work_pools/{env['META_FLOWS_WORK_POOL']}/workers/filter", json={}, timeout=10
    )
    reply.raise_for_status()
    return [w for w in reply.json() if w.get("status") == "ONLINE"]


def stop_worker_containers(env: dict[str, str], task_arn: str) -> None:
    client = docker.DockerClient(base_url=env["DOCKER_HOST"])
    for container in client.containers.list(all=True, filters={"label": f"com.amazonaws.ecs.task-arn={task_arn}"}):
        container.remove(force=True)


def test_bootstrap_creates_worker_service(service_env: dict[str, str]) -> None:
    result = bootstrap(service_env)

    assert result.returncode == 0, result.stdout + result.stderr
    cluster = service_env["META_FLOWS_CLUSTER"]
    service_name = f"{cluster}-prefect-worker"
    rows = rows_of(result.stdout)
    assert rows[("ECS task definition (worker)", service_name)] == "created"
    assert rows[("ECS service (worker)", service_name)] == "created"
    assert re.search(
        rf"watch it with: aws ecs describe-services --cluster {cluster} --services {service_name}", result.stdout
    )
    ecs = aws(service_env, "ecs")
    service = ecs.describe_services(cluster=cluster, services=[service_name])["services"][0]
    definition = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
    container = definition["containerDefinitions"][0]
    assert service["status"] == "ACTIVE"
    assert service["desiredCount"] == 1
    assert container["command"] == [
        "prefect",
        "worker",
        "start",
        "--pool",
        service_env["META_FLOWS_WORK_POOL"],
        "--type",
        "ecs",
    ]
    assert definition["taskRoleArn"].endswith(f":role/{cluster}-worker")
    assert container["image"] == service_env["META_FLOWS_WORKER_IMAGE"]


def test_second_bootstrap_leaves_service_unchanged(service_env: dict[str, str]) -> None:
    result = bootstrap(service_env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert set(rows_of(result.stdout).values()) == {"unchanged"}, result.stdout


def test_runner_starts_service_task_and_worker_polls(service_env: dict[str, str]) -> None:
    cluster = service_env["META_FLOWS_CLUSTER"]
    service_name = f"{cluster}-prefect-worker"
    ecs = aws(service_env, "ecs")
    service = ecs.describe_services(cluster=cluster, services=[service_name])["services"][0]
    assert ecs.list_tasks(cluster=cluster, startedBy=service_name)["taskArns"] == []  # moto starts none itself

    task = ecs.run_task(
        cluster=cluster,
        taskDefinition=service["taskDefinition"],
        startedBy=service_name,
        launchType="FARGATE",
        networkConfiguration=service["networkConfiguration"],
        overrides={
            "containerOverrides": [
                {
                    "name": "prefect-worker",
                    # The local stack's worker has no AWS credentials: keep it off any metadata
                    # endpoint and off the observer queue, and send AWS calls to the emulator.
                    "environment": [
                        {"name": "AWS_ENDPOINT_URL", "value": service_env["AWS_ENDPOINT_URL"]},
                        {"name": "AWS_EC2_METADATA_DISABLED", "value": "true"},
                        {"name": "PREFECT_INTEGRATIONS_AWS_ECS_OBSERVER_ENABLED", "value": "false"},
                    ],
                }
            ]
        },
    )["tasks"][0]
    try:
        workers = wait_for(
            lambda: pool_workers(service_env),
            WORKER_ONLINE_SECONDS,
            f"worker of service {service_name} polling pool {service_env['META_FLOWS_WORK_POOL']}",
        )
    finally:
        ecs.stop_task(cluster=cluster, task=task["taskArn"], reason="end of test")
        stop_worker_containers(service_env, task["taskArn"])

    assert workers
