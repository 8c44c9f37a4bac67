"""ECR repositories and registry login tokens."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import SecretStr

from meta_flows.aws.clients import aws_client
from meta_flows.aws.errors import describe_aws_failure
from meta_flows.report import MANAGED_TAG_KEY, MANAGED_TAG_VALUE, ResourceResult


@dataclass(frozen=True)
class RegistryLogin:
    """Registry credentials from ecr:GetAuthorizationToken; valid until `expires_at`."""

    username: str
    password: SecretStr
    expires_at: datetime


def ensure_repository(region: str, name: str) -> ResourceResult:
    """Create the repository `name` unless it exists; an existing one is used as it is."""
    ecr = aws_client("ecr", region)
    try:
        repository = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
        tags = ecr.list_tags_for_resource(resourceArn=repository["repositoryArn"]).get("tags", [])
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "RepositoryNotFoundException":
            raise describe_aws_failure("ecr:DescribeRepositories", exc) from exc
    except BotoCoreError as exc:
        raise describe_aws_failure("ecr:DescribeRepositories", exc) from exc
    else:
        managed = {"Key": MANAGED_TAG_KEY, "Value": MANAGED_TAG_VALUE} in tags
        return ResourceResult("ECR repository", name, "unchanged" if managed else "foreign")

    try:
        ecr.create_repository(
            repositoryName=name,
            imageScanningConfiguration={"scanOnPush": True},
            tags=[{"Key": MANAGED_TAG_KEY, "Value": MANAGED_TAG_VALUE}],
        )
    except (ClientError, BotoCoreError) as exc:
        raise describe_aws_failure("ecr:CreateRepository", exc) from exc
    return ResourceResult("ECR repository", name, "created")


def get_registry_login(region: str) -> RegistryLogin:
    """Fetch a registry login token; never log or print the password."""
    try:
        reply = aws_client("ecr", region).get_authorization_token()
    except (ClientError, BotoCoreError) as exc:
        raise describe_aws_failure("ecr:GetAuthorizationToken", exc) from exc
    data = reply["authorizationData"][0]
    username, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    # The proxyEndpoint in the reply is deliberately ignored: the registry host comes from the
    # settings, so a pull-through proxy or the local registry gets the same token.
    return RegistryLogin(username=username, password=SecretStr(password), expires_at=data["expiresAt"])
