"""Registry logins from ecr:GetAuthorizationToken, reused until shortly before they expire.

One cache object lives for one build-and-push-image run and is handed to the steps that need a
login; there is no module-level state. A real ECR token lasts 12 hours, so a run fetches one.
The emulator's token is always past its expiry, so there a login is fetched for every use.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from meta_flows.aws.ecr import RegistryLogin

# A login this close to its expiry is fetched anew, so it cannot expire during a push.
EXPIRY_MARGIN = timedelta(minutes=10)


def utc_now() -> datetime:
    return datetime.now(UTC)


class RegistryLoginCache:
    """Return a cached login while it is valid for EXPIRY_MARGIN more, else fetch a new one."""

    def __init__(
        self,
        fetch: Callable[[], RegistryLogin],
        clock: Callable[[], datetime] = utc_now,
        margin: timedelta = EXPIRY_MARGIN,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._margin = margin
        self._login: RegistryLogin | None = None
        self._lock = threading.Lock()
        self.fetches = 0

    def get(self) -> RegistryLogin:
        with self._lock:
            if self._login is None or self._clock() >= self._login.expires_at - self._margin:
                self._login = self._fetch()
                self.fetches += 1
            return self._login
