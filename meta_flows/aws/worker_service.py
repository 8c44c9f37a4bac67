"""The ECS worker as an ECS service on the cluster: what the Prefect 2 agent on EC2 used to be.

The service runs one task of `prefect worker start --pool <pool> --type ecs` under the worker
role, whose policy contains exactly what the worker calls. The Prefect API key, when needed,
comes from Secrets Manager through the task definition's `secrets`, never from a plain variable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meta_flows.aws.calls import TAGS_LOWER, call, is_managed, lookup, tag_map
from meta_flows.aws.clients import aws_client
from meta_flows.plan import Step

CONTAINER_NAME = "prefect-worker"
# The worker mostly waits on HTTP; the smallest Fargate size that fits Prefect's import
# footprint with room to spare.
WORKER_CPU = "512"
WORKER_MEMORY = "1024"


@dataclass(frozen=True)
class WorkerService:
    """Everything the worker's task definition and service are made from."""

    cluster: str
    service_name: str
    family: str
    image: str
    pool: str
    prefect_api_url: str
    observer_queue: str
    region: str
    log_group: str
    execution_role_arn: str
    worker_role_arn: str
    subnets: list[str]
    security_groups: list[str]
    api_key_secret_arn: str | None = None

    @property
    def command(self) -> list[str]:
        return ["prefect", "worker", "start", "--pool", self.pool, "--type", "ecs"]

    def container_definition(self) -> dict[str, Any]:
        environment = {
            "PREFECT_API_URL": self.prefect_api_url,
            "PREFECT_INTEGRATIONS_AWS_ECS_OBSERVER_SQS_QUEUE_NAME": self.observer_queue,
            "AWS_REGION": self.region,
        }
        container: dict[str, Any] = {
            "name": CONTAINER_NAME,
            "image": self.image,
            "essential": True,
            # A container limit equal to the task's; moto 5.2.5's RunTask also needs one on Fargate.
            "memory": int(WORKER_MEMORY),
            "command": self.command,
            "environment": [{"name": k, "value": v} for k, v in sorted(environment.items())],
            "logConfiguration": {
                "logDriver": "awslogs",
                "options": {
                    "awslogs-group": self.log_group,
                    "awslogs-region": self.region,
                    "awslogs-stream-prefix": "worker",
                },
            },
        }
        if self.api_key_secret_arn:
            container["secrets"] = [{"name": "PREFECT_API_KEY", "valueFrom": self.api_key_secret_arn}]
        return container

    def task_definition(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "taskRoleArn": self.worker_role_arn,
            "executionRoleArn": self.execution_role_arn,
            "networkMode": "awsvpc",
            "requiresCompatibilities": ["FARGATE"],
            "cpu": WORKER_CPU,
            "memory": WORKER_MEMORY,
            "containerDefinitions": [self.container_definition()],
        }

    def network_configuration(self) -> dict[str, Any]:
        config: dict[str, Any] = {"subnets": self.subnets, "assignPublicIp": "ENABLED"}
        if self.security_groups:
            config["securityGroups"] = self.security_groups
        return {"awsvpcConfiguration": config}

    def watch_command(self) -> str:
        return (
            f"aws ecs describe-services --cluster {self.cluster} --services {self.service_name} "
            f"--query 'services[0].[status,runningCount,desiredCount]'; "
            f"aws logs tail {self.log_group} --log-stream-name-prefix worker --follow"
        )


def _comparable(definition: dict[str, Any]) -> dict[str, Any]:
    """Keep the fields this project sets, in the shape DescribeTaskDefinition returns them."""
    container = definition["containerDefinitions"][0]
    keys = ("name", "image", "memory", "command", "environment", "secrets", "logConfiguration", "essential")
    return {
        "taskRoleArn": definition.get("taskRoleArn"),
        "executionRoleArn": definition.get("executionRoleArn"),
        "cpu": str(definition.get("cpu")),
        "memory": str(definition.get("memory")),
        "container": {k: container.get(k) for k in keys if container.get(k) not in (None, [])},
    }


def plan_task_definition(region: str, worker: WorkerService) -> Step:
    """Plan the worker's task definition: register a revision when the latest one differs."""
    ecs = aws_client("ecs", region)
    kind = "ECS task definition (worker)"
    desired = worker.task_definition()

    def register() -> None:
        call("ecs:RegisterTaskDefinition", ecs.register_task_definition, **desired, tags=TAGS_LOWER)

    current = lookup(
        "ecs:DescribeTaskDefinition",
        {"ClientException"},
        ecs.describe_task_definition,
        taskDefinition=worker.family,
        include=["TAGS"],
    )
    if current is None:
        return Step(kind, worker.family, "create", "", register)
    if not is_managed(tag_map(current.get("tags", []))):
        return Step(kind, worker.family, "foreign", "not created by this project: used as it is")
    if _comparable(current["taskDefinition"]) == _comparable(desired):
        return Step(kind, worker.family, "unchanged")
    return Step(kind, worker.family, "update", "new revision", register)


def plan_service(region: str, worker: WorkerService) -> Step:
    """Plan the service: create it, point ours at the latest revision, leave a foreign one."""
    ecs = aws_client("ecs", region)
    kind = "ECS service (worker)"
    # A cluster that the plan creates first has no services yet.
    reply = lookup(
        "ecs:DescribeServices",
        {"ClusterNotFoundException"},
        ecs.describe_services,
        cluster=worker.cluster,
        services=[worker.service_name],
        include=["TAGS"],
    )
    services = reply.get("services", []) if reply is not None else []
    service = next((s for s in services if s.get("status") == "ACTIVE"), None)

    def create() -> None:
        call(
            "ecs:CreateService",
            ecs.create_service,
            cluster=worker.cluster,
            serviceName=worker.service_name,
            taskDefinition=worker.family,
            desiredCount=1,
            launchType="FARGATE",
            networkConfiguration=worker.network_configuration(),
            tags=TAGS_LOWER,
            propagateTags="SERVICE",
        )

    def update() -> None:
        call(
            "ecs:UpdateService",
            ecs.update_service,
            cluster=worker.cluster,
            service=worker.service_name,
            taskDefinition=worker.family,
        )

    if service is None:
        return Step(kind, worker.service_name, "create", "desired count 1", create)
    if not is_managed(tag_map(service.get("tags", []))):
        return Step(kind, worker.service_name, "foreign", "not created by this project: used as it is")
    latest = lookup_latest_revision(ecs, worker.family)
    if latest is not None and service.get("taskDefinition") != latest:
        return Step(kind, worker.service_name, "update", "task definition", update)
    return Step(kind, worker.service_name, "unchanged")


def lookup_latest_revision(ecs: Any, family: str) -> str | None:
    current = lookup(
        "ecs:DescribeTaskDefinition", {"ClientException"}, ecs.describe_task_definition, taskDefinition=family
    )
    return None if current is None else str(current["taskDefinition"]["taskDefinitionArn"])


def delete_service(region: str, cluster: str, service_name: str) -> bool:
    """Scale the service to zero and delete it if it is ours; return whether it was deleted."""
    ecs = aws_client("ecs", region)
    reply = call(
        "ecs:DescribeServices", ecs.describe_services, cluster=cluster, services=[service_name], include=["TAGS"]
    )
    service = next((s for s in reply.get("services", []) if s.get("status") == "ACTIVE"), None)
    if service is None or not is_managed(tag_map(service.get("tags", []))):
        return False
    call("ecs:UpdateService", ecs.update_service, cluster=cluster, service=service_name, desiredCount=0)
    call("ecs:DeleteService", ecs.delete_service, cluster=cluster, service=service_name)
    return True


def deregister_task_definitions(region: str, family: str) -> int:
    """Deregister every active revision of `family` that is ours; return how many."""
    ecs = aws_client("ecs", region)
    arns = call("ecs:ListTaskDefinitions", ecs.list_task_definitions, familyPrefix=family, status="ACTIVE")
    count = 0
    for arn in arns.get("taskDefinitionArns", []):
        current = call("ecs:DescribeTaskDefinition", ecs.describe_task_definition, taskDefinition=arn, include=["TAGS"])
        if current["taskDefinition"]["family"] == family and is_managed(tag_map(current.get("tags", []))):
            call("ecs:DeregisterTaskDefinition", ecs.deregister_task_definition, taskDefinition=arn)
            count += 1
    return count
