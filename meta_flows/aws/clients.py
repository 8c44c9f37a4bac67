"""boto3 clients: one place that sets the region and the retry policy.

botocore's own retries are limited to a single attempt, and `retries.LoggedRetries` retries
what is transient (throttling, 5xx, connection resets, ECS family contention) with exponential
backoff and full jitter, logging each retry. The endpoint comes from boto3's own configuration
(`AWS_ENDPOINT_URL`, profiles), so the local stack needs no code path of its own.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

from meta_flows.aws.retries import MAX_ATTEMPTS, install_logged_retries


def aws_client(service: str, region: str) -> Any:
    """Create a boto3 client for `service` in `region` from the default credential chain."""
    config = Config(region_name=region, retries={"mode": "standard", "total_max_attempts": 1})
    client = boto3.session.Session().client(service, config=config)
    install_logged_retries(client, service, MAX_ATTEMPTS)
    return client
