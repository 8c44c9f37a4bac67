"""boto3 clients: one place that sets the region and the retry policy.

botocore's own retries are limited to a single attempt, and `retries.LoggedRetries` retries
what is transient (throttling, 5xx, connection resets, ECS family contention) with exponential
backoff and full jitter, logging each retry. The endpoint comes from boto3's own configuration
(`AWS_ENDPOINT_URL`, profiles), so the local stack needs no code path of its own.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import boto3
from botocore.config import Config

from meta_flows.aws.retries import MAX_ATTEMPTS, install_logged_retries

# Variables that change which endpoint or credentials a new client gets; part of the cache key.
CLIENT_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN")

_creation_lock = threading.Lock()
_clients: dict[tuple[str, str, tuple[str | None, ...]], Any] = {}


def aws_client(service: str, region: str) -> Any:
    """Return a boto3 client for `service` in `region` from the default credential chain.

    Clients are reused within the process: creating one loads the service model, which costs
    about 0.1 s of CPU, and deploy-all-flows needs several per flow. Clients are created one
    at a time, under one lock, and each only once, so the first flows of a deploy-all-flows run
    do not each build their own. botocore clients are thread-safe once created; sessions are
    not.
    """
    key = (service, region, tuple(os.environ.get(name) for name in CLIENT_VARIABLES))
    client = _clients.get(key)
    if client is None:
        with _creation_lock:
            client = _clients.get(key)
            if client is None:
                client = _create_client(service, region)
                _clients[key] = client
    return client


def _create_client(service: str, region: str) -> Any:
    config = Config(region_name=region, retries={"mode": "standard", "total_max_attempts": 1})
    client = boto3.session.Session().client(service, config=config)
    install_logged_retries(client, service, MAX_ATTEMPTS)
    return client
