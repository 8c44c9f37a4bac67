"""boto3 clients with bounded, jittered retries of transient failures only.

botocore's "standard" retry mode retries throttling, 5xx answers and connection errors, with
exponential backoff and full jitter, and nothing else. The endpoint comes from boto3's own
configuration (`AWS_ENDPOINT_URL`, profiles), so the local stack needs no code path of its own.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

MAX_ATTEMPTS = 5


def aws_client(service: str, region: str) -> Any:
    """Create a boto3 client for `service` in `region` from the default credential chain."""
    config = Config(region_name=region, retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS})
    return boto3.session.Session().client(service, config=config)
