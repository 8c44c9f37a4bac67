"""One place that turns botocore failures into AwsError, and the managed-by tag in each API's shape."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from meta_flows.aws.errors import describe_aws_failure
from meta_flows.report import MANAGED_TAG_KEY, MANAGED_TAG_VALUE

# The tag in the key casing of each API family: ECS uses lower-case keys, most others upper-case.
TAGS_UPPER = [{"Key": MANAGED_TAG_KEY, "Value": MANAGED_TAG_VALUE}]
TAGS_LOWER = [{"key": MANAGED_TAG_KEY, "value": MANAGED_TAG_VALUE}]
TAGS_MAP = {MANAGED_TAG_KEY: MANAGED_TAG_VALUE}


def call(action: str, method: Callable[..., Any], **kwargs: Any) -> Any:
    """Call one boto3 method; raise AwsError naming `action` on any botocore failure."""
    try:
        return method(**kwargs)
    except (ClientError, BotoCoreError) as exc:
        raise describe_aws_failure(action, exc) from exc


def lookup(action: str, missing_codes: set[str], method: Callable[..., Any], **kwargs: Any) -> Any | None:
    """Call a read; return None when AWS returns one of the error codes in `missing_codes`."""
    try:
        return method(**kwargs)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in missing_codes:
            return None
        raise describe_aws_failure(action, exc) from exc
    except BotoCoreError as exc:
        raise describe_aws_failure(action, exc) from exc


def is_managed(tags: dict[str, str]) -> bool:
    return tags.get(MANAGED_TAG_KEY) == MANAGED_TAG_VALUE


def tag_map(tags: list[dict[str, str]]) -> dict[str, str]:
    """Turn a list of tags in either casing into a dict."""
    return {t.get("Key", t.get("key", "")): t.get("Value", t.get("value", "")) for t in tags}
