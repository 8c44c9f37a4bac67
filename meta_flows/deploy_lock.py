"""One deploy of a flow at a time: a Prefect global concurrency limit named after its repository.

Two deploy-flow runs of the same flow would otherwise build, push and register side by side,
and the last writer would win at random. The limit lives on the Prefect server, so it holds
across workers and machines. Different flows deploy in parallel.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect import get_run_logger
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

LOCK_PREFIX = "deploy-flow-"
# A deploy waits this long for the one before it; a first build with dependencies takes minutes.
LOCK_TIMEOUT_SECONDS = 1800


def lock_name(repository: str) -> str:
    """Return the concurrency limit name of one flow's ECR repository (<prefix>/<flow>)."""
    return LOCK_PREFIX + repository.replace("/", "--")


def ensure_lock(client: SyncPrefectClient, name: str) -> None:
    """Create the limit with one slot unless it exists; a concurrent creation is fine."""
    try:
        client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1, active=True))
        except ObjectAlreadyExists:
            pass


@contextmanager
def deploy_lock(repository: str) -> Iterator[None]:
    """Hold the flow's deploy slot for the duration of the block, logging the wait and the hold."""
    logger = get_run_logger()
    name = lock_name(repository)
    with get_client(sync_client=True) as client:
        ensure_lock(client, name)
    logger.info("Waiting for deploy lock %s", name)
    with concurrency(name, occupy=1, timeout_seconds=LOCK_TIMEOUT_SECONDS, strict=True):
        logger.info("Acquired deploy lock %s", name)
        try:
            yield
        finally:
            logger.info("Releasing deploy lock %s", name)
