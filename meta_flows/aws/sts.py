"""The caller's identity, checked before anything else."""

from __future__ import annotations

from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from meta_flows.aws.clients import aws_client
from meta_flows.aws.errors import describe_aws_failure


@dataclass(frozen=True)
class CallerIdentity:
    account: str
    arn: str


def get_caller_identity(region: str) -> CallerIdentity:
    """Return the account and principal the credentials belong to."""
    try:
        reply = aws_client("sts", region).get_caller_identity()
    except (ClientError, BotoCoreError) as exc:
        raise describe_aws_failure("sts:GetCallerIdentity", exc) from exc
    return CallerIdentity(account=reply["Account"], arn=reply["Arn"])
