"""ECR repositories and registry login tokens."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import SecretStr

from meta_flows.aws.clients import aws_client
from meta_flows.aws.errors import describe_aws_failure
from meta_flows.report import ResourceResult

# Matches the default of META_FLOWS_IMAGE_KEEP_COUNT.
DEFAULT_KEEP_IMAGES = 30


@dataclass(frozen=True)
class RegistryLogin:
    """Registry credentials from ecr:GetAuthorizationToken; valid until `expires_at`."""

    username: str
    password: SecretStr
    expires_at: datetime


def ensure_repository(region: str, name: str, keep_images: int = DEFAULT_KEEP_IMAGES) -> ResourceResult:
    """Create the repository `name` unless it exists, or bring ours to the wanted settings.

    A repository this project did not create is used as it is.
    """
    # Imported here: ecr_plan reads the protected lifecycle rule from history, which imports this module.
    from meta_flows.aws.ecr_plan import plan_repository

    return plan_repository(region, name, keep_images).apply()


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
