"""Registry logins from ecr:GetAuthorizationToken, reused until shortly before they expire.

One cache object lives for one deploy and is handed to the steps that need a login; there is
no module-level state. A real ECR token lasts 12 hours, so a deploy fetches one.

A token whose expiry is already past when it arrives gives no clue about when it will stop
working, because this machine's clock disagrees with the one that issued it (the emulator's
token always expires on 1 January 2015). Such a token is kept until the registry rejects it.
The registry API calls then report the rejection with `reject` and fetch a new one.
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
        self._expiry_unknown = False
        self._lock = threading.Lock()
        self.fetches = 0

    def get(self) -> RegistryLogin:
        with self._lock:
            if self._login is None or (not self._expiry_unknown and self._near_expiry(self._login)):
                self._login = self._fetch()
                self._expiry_unknown = self._near_expiry(self._login)
                self.fetches += 1
            return self._login

    def reject(self, login: RegistryLogin) -> None:
        """Forget `login`, which the registry refused, so that the next `get` fetches a new one."""
        with self._lock:
            if self._login is login:
                self._login = None

    def _near_expiry(self, login: RegistryLogin) -> bool:
        return self._clock() >= login.expires_at - self._margin
