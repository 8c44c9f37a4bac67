"""Retries of AWS calls: transient failures only, bounded, with full jitter, each one logged.

botocore's own retries stay off (one attempt) and this handler answers its `needs-retry` event
instead, so every retry is logged with its delay and attempt count. A call that still fails
after the last attempt raises botocore's error as usual, which `errors.describe_aws_failure`
turns into guidance.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

from botocore.exceptions import (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

MAX_ATTEMPTS = 5
BASE_DELAY_SECONDS = 0.5
MAX_DELAY_SECONDS = 20.0

# Error codes AWS services use for throttling, from botocore's standard retry mode and the
# services' API references.
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    }
)
TRANSIENT_STATUS_CODES = frozenset({429, 500, 502, 503, 504})
# ECS rejects concurrent RegisterTaskDefinition calls of one family with the generic code
# ClientException; only its message tells it apart from a real client error, so this is the
# one place where a message is matched.
ECS_FAMILY_CONTENTION_MESSAGE = "Too many concurrent attempts to create a new revision"
NETWORK_ERRORS = (ConnectionClosedError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError)


def transient_reason(response: Any, caught_exception: Exception | None) -> str | None:
    """Return why a failed attempt may succeed when repeated, or None when it is not transient."""
    if caught_exception is not None:
        return type(caught_exception).__name__ if isinstance(caught_exception, NETWORK_ERRORS) else None
    if response is None:
        return None
    http_response, parsed = response
    error = parsed.get("Error", {}) if isinstance(parsed, dict) else {}
    code = str(error.get("Code", ""))
    if code in THROTTLING_CODES:
        return code
    if code == "ClientException" and ECS_FAMILY_CONTENTION_MESSAGE in str(error.get("Message", "")):
        return "ClientException (concurrent revisions of one task definition family)"
    status = int(getattr(http_response, "status_code", 200))
    if status in TRANSIENT_STATUS_CODES:
        return f"HTTP {status}" + (f" {code}" if code else "")
    return None


def find_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """Return the Prefect run logger inside a flow or task run, else this module's logger."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


class LoggedRetries:
    """A botocore `needs-retry` handler: exponential backoff with full jitter, logged per retry."""

    def __init__(
        self,
        service: str,
        max_attempts: int = MAX_ATTEMPTS,
        base_delay: float = BASE_DELAY_SECONDS,
        max_delay: float = MAX_DELAY_SECONDS,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.service = service
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.uniform = uniform

    def delay_before(self, attempt: int) -> float:
        """Return the wait before `attempt` (2 or more): uniform in [0, base * 2^(attempt-2)], capped."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 2))
        return self.uniform(0.0, ceiling)

    def __call__(
        self,
        attempts: int,
        response: Any = None,
        caught_exception: Exception | None = None,
        operation: Any = None,
        **_: Any,
    ) -> float | None:
        reason = transient_reason(response, caught_exception)
        if reason is None:
            return None
        action = f"{self.service}:{getattr(operation, 'name', 'call')}"
        if attempts >= self.max_attempts:
            find_logger().error("%s failed with %s on attempt %d/%d: giving up", action, reason, attempts, attempts)
            return None
        delay = self.delay_before(attempts + 1)
        find_logger().warning(
            "%s failed with %s; retrying in %.2f s (attempt %d/%d)",
            action,
            reason,
            delay,
            attempts + 1,
            self.max_attempts,
        )
        return delay


def install_logged_retries(client: Any, service: str, max_attempts: int = MAX_ATTEMPTS) -> None:
    """Register LoggedRetries on `client`; botocore's own handler, limited to one attempt, never retries."""
    event_name = client.meta.service_model.service_id.hyphenize()
    client.meta.events.register_first(f"needs-retry.{event_name}", LoggedRetries(service, max_attempts))
