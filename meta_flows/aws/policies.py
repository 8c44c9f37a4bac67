"""The IAM policies this project generates: execution role, task role, ECS worker, deployer.

Each is scoped to resource ARNs wherever AWS supports it. A statement on "*" appears only for
the actions in WILDCARD_ONLY_ACTIONS, which AWS grants on no narrower resource (each action's
"Resource types" column is empty in the IAM Service Authorization Reference).
`python -m meta_flows.aws.policies` prints them for the current settings.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any

Policy = dict[str, Any]
Statement = dict[str, Any]

# Actions AWS authorizes on "*" only (Service Authorization Reference: no resource types).
WILDCARD_ONLY_ACTIONS = frozenset(
    {
        "ecr:GetAuthorizationToken",
        "ecs:RegisterTaskDefinition",
        "ecs:DescribeTaskDefinition",
        "ecs:DeregisterTaskDefinition",
        "ec2:DescribeVpcs",
        "ec2:DescribeSubnets",
        "ec2:DescribeSecurityGroups",
        "ec2:DescribeNetworkInterfaces",
        "sts:GetCallerIdentity",
    }
)

ECS_TASKS_TRUST_POLICY: Policy = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}


@dataclass(frozen=True)
class PolicyScope:
    """The names and ARNs the policies are scoped to, all derived from the settings."""

    partition: str
    account: str
    region: str
    repository_prefix: str
    cluster_name: str
    log_group: str
    observer_queue: str
    execution_role_arn: str
    task_role_arn: str
    secret_arns: tuple[str, ...] = ()

    def arn(self, service: str, resource: str, *, region: bool = True) -> str:
        return f"arn:{self.partition}:{service}:{self.region if region else ''}:{self.account}:{resource}"

    @property
    def repositories(self) -> str:
        return self.arn("ecr", f"repository/{self.repository_prefix}/*")

    @property
    def cluster_arn(self) -> str:
        return self.arn("ecs", f"cluster/{self.cluster_name}")

    @property
    def log_group_arn(self) -> str:
        return self.arn("logs", f"log-group:{self.log_group}")


def _policy(*statements: Statement) -> Policy:
    return {"Version": "2012-10-17", "Statement": [s for s in statements if s["Action"]]}


def _allow(sid: str, actions: list[str], resources: str | list[str]) -> Statement:
    return {"Sid": sid, "Effect": "Allow", "Action": sorted(actions), "Resource": resources}


def execution_policy(scope: PolicyScope) -> Policy:
    """Pull the flows' images, write to the log group, read the containers' secrets."""
    statements = [
        _allow("RegistryLogin", ["ecr:GetAuthorizationToken"], "*"),
        _allow(
            "PullFlowImages",
            ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
            scope.repositories,
        ),
        _allow("WriteLogs", ["logs:CreateLogStream", "logs:PutLogEvents"], f"{scope.log_group_arn}:log-stream:*"),
    ]
    secrets = sorted(a for a in scope.secret_arns if ":secretsmanager:" in a)
    parameters = sorted(a for a in scope.secret_arns if ":ssm:" in a)
    if secrets:
        statements.append(_allow("ReadContainerSecrets", ["secretsmanager:GetSecretValue"], secrets))
    if parameters:
        statements.append(_allow("ReadContainerParameters", ["ssm:GetParameters"], parameters))
    return _policy(*statements)


def task_policy(user_statements: list[Statement]) -> Policy | None:
    """Return the task role's policy: only what the user supplies, None when nothing is."""
    if not user_statements:
        return None
    return {"Version": "2012-10-17", "Statement": list(user_statements)}


def worker_policy(scope: PolicyScope) -> Policy:
    """Build the worker policy: task definitions, tasks, the observer queue and PassRole on the flow roles."""
    task_definitions_and_tasks = [
        scope.arn("ecs", "task/" + scope.cluster_name + "/*"),
        scope.arn("ecs", "task-definition/*"),
    ]
    return _policy(
        _allow(
            "TaskDefinitions",
            ["ecs:RegisterTaskDefinition", "ecs:DescribeTaskDefinition", "ecs:DeregisterTaskDefinition"],
            "*",
        ),
        _allow("NetworkLookups", ["ec2:DescribeVpcs", "ec2:DescribeSubnets"], "*"),
        _allow(
            "RunTasksInCluster",
            ["ecs:RunTask", "ecs:DescribeTasks", "ecs:StopTask", "ecs:TagResource"],
            task_definitions_and_tasks,
        ),
        _allow("DescribeCluster", ["ecs:DescribeClusters"], scope.cluster_arn),
        _allow(
            "ObserveTaskEvents",
            [
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:ChangeMessageVisibility",
                "sqs:GetQueueUrl",
                "sqs:GetQueueAttributes",
            ],
            scope.arn("sqs", scope.observer_queue),
        ),
        _allow(
            "ReadCrashedRunLogs",
            ["logs:GetLogEvents", "logs:DescribeLogStreams"],
            [scope.log_group_arn, f"{scope.log_group_arn}:log-stream:*"],
        ),
        _allow(
            "PassTaskRoles",
            ["iam:PassRole"],
            [scope.execution_role_arn, scope.task_role_arn],
        ),
    )


def deployer_policy(scope: PolicyScope) -> Policy:
    """Build the deployer policy: push to the flows' repositories, register task definitions, watch smoke runs.

    Registering deployments is a Prefect API call, so it needs no AWS permission. The task
    definition of each deployment is registered at deploy time, which needs PassRole on its roles.
    """
    return _policy(
        _allow("Identity", ["sts:GetCallerIdentity"], "*"),
        _allow("TaskDefinitions", ["ecs:RegisterTaskDefinition", "ecs:DescribeTaskDefinition"], "*"),
        _allow("PassTaskRoles", ["iam:PassRole"], [scope.execution_role_arn, scope.task_role_arn]),
        _allow("WatchSmokeRuns", ["ecs:DescribeTasks"], scope.arn("ecs", f"task/{scope.cluster_name}/*")),
        _allow("RegistryLogin", ["ecr:GetAuthorizationToken"], "*"),
        _allow(
            "PushFlowImages",
            [
                "ecr:DescribeRepositories",
                "ecr:ListTagsForResource",
                "ecr:CreateRepository",
                "ecr:TagResource",
                "ecr:GetLifecyclePolicy",
                "ecr:PutLifecyclePolicy",
                "ecr:PutImageTagMutability",
                "ecr:PutImageScanningConfiguration",
                "ecr:BatchCheckLayerAvailability",
                "ecr:InitiateLayerUpload",
                "ecr:UploadLayerPart",
                "ecr:CompleteLayerUpload",
                "ecr:PutImage",
                "ecr:BatchGetImage",
                "ecr:BatchDeleteImage",
            ],
            scope.repositories,
        ),
    )


def wildcard_findings(policy: Policy) -> list[str]:
    """List every "*" action, and every "*" resource on an action AWS grants more narrowly."""
    findings = []
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        findings += [f"wildcard action {a!r}" for a in actions if "*" in a]
        if "*" in resources:
            findings += [f"{a} on '*'" for a in actions if a not in WILDCARD_ONLY_ACTIONS]
    return findings


def main(argv: list[str] | None = None) -> int:
    from meta_flows.aws.resources import policy_scope_for
    from meta_flows.errors import MetaFlowsError
    from meta_flows.settings import load_settings

    parser = argparse.ArgumentParser(
        prog="python -m meta_flows.aws.policies", description="Print the IAM policies for the current settings."
    )
    parser.add_argument("--account", default="123456789012", help="AWS account id to put in the ARNs")
    parser.add_argument("--partition", default="aws", help="AWS partition of the ARNs (aws, aws-cn, aws-us-gov)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        scope = policy_scope_for(settings, args.account, args.partition)
    except MetaFlowsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for title, policy in (
        ("execution role", execution_policy(scope)),
        ("ECS worker", worker_policy(scope)),
        ("deployer", deployer_policy(scope)),
    ):
        print(f"# {title}\n{json.dumps(policy, indent=2)}\n")
    task = task_policy(settings.task_role_statements)
    described = json.dumps(task, indent=2) if task else "(no policy: the flow code gets no AWS permission)"
    print(f"# task role\n{described}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
