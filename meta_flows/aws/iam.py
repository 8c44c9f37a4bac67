"""The ECS task execution role, created only when no role ARN is configured."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from meta_flows.aws.clients import aws_client
from meta_flows.aws.errors import describe_aws_failure
from meta_flows.report import MANAGED_TAG_KEY, MANAGED_TAG_VALUE, ResourceResult

EXECUTION_POLICY_NAME = "meta-flows-execution"

ECS_TASKS_TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ecs-tasks.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


def execution_policy(account: str, region: str, repository_prefix: str) -> dict[str, object]:
    """Return the execution role's policy: pull the flows' images and write their logs.

    ecr:GetAuthorizationToken is granted on "*" because AWS offers it on no narrower resource.
    """
    repositories = f"arn:aws:ecr:{region}:{account}:repository/{repository_prefix}/*"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
            {
                "Effect": "Allow",
                "Action": ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                "Resource": repositories,
            },
            {
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": f"arn:aws:logs:{region}:{account}:log-group:*",
            },
        ],
    }


def ensure_execution_role(region: str, role_name: str, policy: dict[str, object]) -> tuple[ResourceResult, str]:
    """Create the execution role with its inline policy unless it exists; return the result and ARN.

    A role of ours whose policy is missing (a run stopped between the two calls) gets it added.
    """
    iam = aws_client("iam", region)
    try:
        role = iam.get_role(RoleName=role_name)["Role"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "NoSuchEntity":
            raise describe_aws_failure("iam:GetRole", exc) from exc
    except BotoCoreError as exc:
        raise describe_aws_failure("iam:GetRole", exc) from exc
    else:
        tags = {t["Key"]: t["Value"] for t in role.get("Tags", [])}
        if tags.get(MANAGED_TAG_KEY) != MANAGED_TAG_VALUE:
            return ResourceResult("IAM execution role", role_name, "foreign"), role["Arn"]
        if _has_policy(iam, role_name):
            return ResourceResult("IAM execution role", role_name, "unchanged"), role["Arn"]
        _put_policy(iam, role_name, policy)
        return ResourceResult("IAM execution role", role_name, "updated", "inline policy added"), role["Arn"]

    try:
        role = iam.create_role(
            RoleName=role_name,
            AssumeRolePolicyDocument=json.dumps(ECS_TASKS_TRUST_POLICY),
            Description="ECS task execution role of the Prefect flows (image pull, logs)",
            Tags=[{"Key": MANAGED_TAG_KEY, "Value": MANAGED_TAG_VALUE}],
        )["Role"]
    except (ClientError, BotoCoreError) as exc:
        raise describe_aws_failure("iam:CreateRole", exc) from exc
    _put_policy(iam, role_name, policy)
    return ResourceResult("IAM execution role", role_name, "created"), role["Arn"]


def _has_policy(iam: Any, role_name: str) -> bool:
    try:
        iam.get_role_policy(RoleName=role_name, PolicyName=EXECUTION_POLICY_NAME)
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "NoSuchEntity":
            return False
        raise describe_aws_failure("iam:GetRolePolicy", exc) from exc
    except BotoCoreError as exc:
        raise describe_aws_failure("iam:GetRolePolicy", exc) from exc
    return True


def _put_policy(iam: Any, role_name: str, policy: dict[str, object]) -> None:
    try:
        iam.put_role_policy(RoleName=role_name, PolicyName=EXECUTION_POLICY_NAME, PolicyDocument=json.dumps(policy))
    except (ClientError, BotoCoreError) as exc:
        raise describe_aws_failure("iam:PutRolePolicy", exc) from exc
