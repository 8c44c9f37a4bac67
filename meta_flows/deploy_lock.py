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
# A deploy waits this long for the one before it. A first build with dependencies takes
# minutes, and a deploy-all-flows run holds the locks of all its flows until it ends.
LOCK_TIMEOUT_SECONDS = 1800
LIST_PAGE_SIZE = 200


def lock_name(repository: str) -> str:
    """Return the concurrency limit name of one flow's ECR repository (<prefix>/<flow>)."""
    return LOCK_PREFIX + repository.replace("/", "--")


def existing_lock_names(client: SyncPrefectClient) -> set[str]:
    """Return the names of every global concurrency limit on the server."""
    names: set[str] = set()
    while True:
        page = client.read_global_concurrency_limits(limit=LIST_PAGE_SIZE, offset=len(names))
        names.update(limit.name for limit in page)
        if len(page) < LIST_PAGE_SIZE:
            return names


def ensure_locks(client: SyncPrefectClient, names: list[str]) -> None:
    """Create each missing limit with one slot; a concurrent creation of the same one is fine."""
    existing = existing_lock_names(client) if len(names) > 1 else set()
    for name in names:
        if name in existing:
            continue
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
    with deploy_locks([repository]):
        yield


@contextmanager
def deploy_locks(repositories: list[str]) -> Iterator[None]:
    """Hold the deploy slots of all `repositories` for the duration of the block.

    The slots are taken in one request, all or none, so a deploy of many flows makes one
    acquisition instead of one per flow. On SQLite, concurrent acquisitions collide and the
    client waits seconds before each retry, so this saves waiting as well as requests.
    """
    logger = get_run_logger()
    names = [lock_name(repository) for repository in dict.fromkeys(repositories)]
    with get_client(sync_client=True) as client:
        ensure_locks(client, names)
    locks = ("deploy lock " if len(names) == 1 else "deploy locks ") + ", ".join(names)
    logger.info("Waiting for %s", locks)
    with concurrency(names, occupy=1, timeout_seconds=LOCK_TIMEOUT_SECONDS, strict=True):
        logger.info("Acquired %s", locks)
        try:
            yield
        finally:
            logger.info("Releasing %s", locks)
