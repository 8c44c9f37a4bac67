"""The AWS side of bootstrap-pool as one ordered plan: names, ARNs, policies and steps.

Every name and ARN is derived from the settings and the caller's account, so the plan needs
no resource to exist yet, and a dry run can show the whole set-up on an empty account.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect.settings import get_current_settings

from meta_flows.aws import ecr_plan, ecs_plan, logs, observer, roles, worker_service
from meta_flows.aws.network import Network, service_security_groups, service_subnets
from meta_flows.aws.policies import (
    ECS_TASKS_TRUST_POLICY,
    PolicyScope,
    execution_policy,
    task_policy,
    worker_policy,
)
from meta_flows.plan import Step
from meta_flows.settings import Settings


@dataclass(frozen=True)
class AwsNames:
    """The names and ARNs of what bootstrap creates or uses on AWS."""

    execution_role_name: str
    task_role_name: str
    worker_role_name: str
    execution_role_arn: str
    task_role_arn: str
    worker_role_arn: str
    observer_queue_arn: str
    observer_rule: str
    worker_family: str
    worker_service: str


def names_for(settings: Settings, account: str, partition: str) -> AwsNames:
    cluster = settings.cluster_name

    def role_arn(name: str) -> str:
        return f"arn:{partition}:iam::{account}:role/{name}"

    return AwsNames(
        execution_role_name=f"{cluster}-execution",
        task_role_name=f"{cluster}-task",
        worker_role_name=f"{cluster}-worker",
        execution_role_arn=settings.execution_role_arn or role_arn(f"{cluster}-execution"),
        task_role_arn=settings.task_role_arn or role_arn(f"{cluster}-task"),
        worker_role_arn=role_arn(f"{cluster}-worker"),
        observer_queue_arn=observer.queue_arn(
            partition, settings.aws_region, account, settings.effective_observer_queue
        ),
        observer_rule=settings.effective_observer_queue,
        worker_family=f"{cluster}-prefect-worker",
        worker_service=f"{cluster}-prefect-worker",
    )


def policy_scope_for(settings: Settings, account: str, partition: str = "aws") -> PolicyScope:
    names = names_for(settings, account, partition)
    secrets = list(settings.container_secrets.values())
    if settings.prefect_api_key_secret_arn:
        secrets.append(settings.prefect_api_key_secret_arn)
    return PolicyScope(
        partition=partition,
        account=account,
        region=settings.aws_region,
        repository_prefix=settings.repository_prefix,
        cluster_name=settings.cluster_name,
        log_group=settings.effective_log_group,
        observer_queue=settings.effective_observer_queue,
        execution_role_arn=names.execution_role_arn,
        task_role_arn=names.task_role_arn,
        secret_arns=tuple(secrets),
    )


def plan_aws(settings: Settings, account: str, partition: str, flows: list[str], network: Network) -> list[Step]:
    """Look up every AWS resource and return the steps, in the order they must be applied."""
    region = settings.aws_region
    names = names_for(settings, account, partition)
    scope = policy_scope_for(settings, account, partition)
    cluster_arn = f"arn:{partition}:ecs:{region}:{account}:cluster/{settings.cluster_name}"

    steps = [ecs_plan.plan_cluster(region, settings.cluster)]
    steps.append(logs.plan_log_group(region, settings.effective_log_group, settings.log_retention_days))
    if settings.execution_role_arn is None:
        steps.append(
            roles.plan_role(
                region,
                "IAM execution role",
                names.execution_role_name,
                ECS_TASKS_TRUST_POLICY,
                execution_policy(scope),
                "ECS task execution role of the Prefect flows (image pull, logs)",
            )
        )
    if settings.task_role_arn is None:
        steps.append(
            roles.plan_role(
                region,
                "IAM task role",
                names.task_role_name,
                ECS_TASKS_TRUST_POLICY,
                task_policy(settings.task_role_statements),
                "Role the Prefect flows' code runs as",
            )
        )
    steps.append(
        roles.plan_role(
            region,
            "IAM worker role",
            names.worker_role_name,
            ECS_TASKS_TRUST_POLICY,
            worker_policy(scope),
            "Role of the Prefect ECS worker",
        )
    )
    steps += [ecr_plan.plan_repository(region, settings.repository_name(f), settings.image_keep_count) for f in flows]
    queue = settings.effective_observer_queue
    steps.append(
        observer.plan_queue(
            region,
            queue,
            observer.queue_attributes(
                names.observer_queue_arn, observer.rule_arn(partition, region, account, names.observer_rule)
            ),
        )
    )
    steps.append(
        observer.plan_rule(region, names.observer_rule, observer.event_pattern(cluster_arn), names.observer_queue_arn)
    )
    if settings.worker_service:
        worker = worker_definition(settings, names, network)
        steps += [worker_service.plan_task_definition(region, worker), worker_service.plan_service(region, worker)]
    return steps


def worker_definition(settings: Settings, names: AwsNames, network: Network) -> worker_service.WorkerService:
    return worker_service.WorkerService(
        cluster=settings.cluster,
        service_name=names.worker_service,
        family=names.worker_family,
        image=settings.worker_image,
        pool=settings.work_pool,
        prefect_api_url=str(get_current_settings().api.url or ""),
        observer_queue=settings.effective_observer_queue,
        region=settings.aws_region,
        log_group=settings.effective_log_group,
        execution_role_arn=names.execution_role_arn,
        worker_role_arn=names.worker_role_arn,
        subnets=service_subnets(settings.aws_region, network),
        security_groups=service_security_groups(settings.aws_region, network),
        api_key_secret_arn=settings.prefect_api_key_secret_arn,
    )
