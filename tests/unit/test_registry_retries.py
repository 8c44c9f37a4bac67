"""Registry API requests against a stand-in registry on 127.0.0.1 that fails on purpose."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import SecretStr

from meta_flows.aws.ecr import RegistryLogin
from meta_flows.aws.login_cache import RegistryLoginCache
from meta_flows.errors import RegistryError
from meta_flows.images import registry
from meta_flows.images.manifests import read_manifest
from meta_flows.images.registry import find_manifest_digest, send_request
from tests.support.http_server import loopback_server

DIGEST = "sha256:" + "ab" * 32


MANIFEST = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
    "config": {"size": 1000},
    "layers": [{"size": 20000}, {"size": 300}],
}


class StandInRegistry(BaseHTTPRequestHandler):
    """A registry that returns the next status of `statuses` to each request, then 200 with a digest.

    A GET returns `manifest` as its body. `seen` records each request and the password it sent.
    """

    protocol_version = "HTTP/1.1"
    statuses: list[int] = []
    seen: list[str] = []
    passwords: list[str] = []
    manifest: dict[str, Any] = MANIFEST

    def do_HEAD(self) -> None:  # noqa: N802 - name fixed by BaseHTTPRequestHandler
        self.answer(b"")

    def do_GET(self) -> None:  # noqa: N802 - name fixed by BaseHTTPRequestHandler
        self.answer(json.dumps(self.manifest).encode())

    def answer(self, body: bytes) -> None:
        self.seen.append(f"{self.command} {self.path}")
        auth = self.headers.get("Authorization", "")
        self.passwords.append(base64.b64decode(auth.removeprefix("Basic ")).decode().partition(":")[2])
        status = self.statuses.pop(0) if self.statuses else 200
        self.send_response(status)
        if status != 200:
            body = b""
        else:
            self.send_header("Docker-Content-Digest", DIGEST)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return None


@pytest.fixture
def host() -> Iterator[str]:
    StandInRegistry.statuses = []
    StandInRegistry.seen = []
    StandInRegistry.passwords = []
    StandInRegistry.manifest = MANIFEST
    with loopback_server(StandInRegistry) as address:
        yield address


@pytest.fixture
def no_wait(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the backoff delays instead of sleeping them."""
    delays: list[float] = []
    monkeypatch.setattr(registry, "pause", delays.append)
    return delays


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def logged() -> Iterator[list[str]]:
    """Collect the retry logger's messages with its own handler, because Prefect reconfigures the root logger."""
    handler = Records()
    logger = logging.getLogger("meta_flows.aws.retries")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)
    logger.setLevel(level)


LOGIN = RegistryLogin(username="AWS", password=SecretStr("registry-password"), expires_at=datetime.now(UTC))


def test_transient_answers_retried_then_succeed(host: str, no_wait: list[float], logged: list[str]) -> None:
    StandInRegistry.statuses = [503, 429]

    digest = find_manifest_digest(host, "prefect-flows/hello", "0123456789abcdef", LOGIN)

    assert digest == DIGEST
    assert len(StandInRegistry.seen) == 3
    assert len(no_wait) == 2
    retries = [m for m in logged if "retrying" in m]
    assert retries[0].startswith(
        "registry HEAD /v2/prefect-flows/hello/manifests/0123456789abcdef failed with HTTP 503"
    )
    assert retries[0].endswith("(attempt 2/5)")
    assert "failed with HTTP 429" in retries[1]
    assert retries[1].endswith("(attempt 3/5)")


def test_persistent_5xx_gives_up_with_status(host: str, no_wait: list[float], logged: list[str]) -> None:
    StandInRegistry.statuses = [502] * 5

    with pytest.raises(RegistryError, match=r"returned HTTP 502 for prefect-flows/hello:0123456789abcdef"):
        find_manifest_digest(host, "prefect-flows/hello", "0123456789abcdef", LOGIN)

    assert len(StandInRegistry.seen) == 5
    assert len(no_wait) == 4
    assert any("on attempt 5/5: giving up" in m for m in logged)


def test_client_errors_not_retried(host: str, no_wait: list[float]) -> None:
    StandInRegistry.statuses = [404]

    assert find_manifest_digest(host, "prefect-flows/hello", "missing", LOGIN) is None
    assert len(StandInRegistry.seen) == 1
    assert no_wait == []


def test_unreachable_registry_names_setting(no_wait: list[float]) -> None:
    # Bind a port, then close it, so nothing listens there.
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandInRegistry)
    closed = f"127.0.0.1:{server.server_address[1]}"
    server.server_close()

    with pytest.raises(RegistryError, match="cannot be reached.*check META_FLOWS_REGISTRY_HOST"):
        find_manifest_digest(closed, "prefect-flows/hello", "0123456789abcdef", LOGIN)
    assert len(no_wait) == 4


def test_backoff_delays_bounded(host: str, no_wait: list[float]) -> None:
    StandInRegistry.statuses = [500] * 4

    reply = send_request("HEAD", f"http://{host}/v2/r/manifests/t", LOGIN)

    assert reply.status_code == 200
    ceilings = [0.5, 1.0, 2.0, 4.0]
    assert all(0.0 <= delay <= ceiling for delay, ceiling in zip(no_wait, ceilings, strict=True))


def test_password_not_in_retry_logs(host: str, no_wait: list[float], logged: list[str]) -> None:
    StandInRegistry.statuses = [503]

    send_request("HEAD", f"http://{host}/v2/r/manifests/t", LOGIN)

    assert logged
    assert all("registry-password" not in m for m in logged)


def cache_issuing(passwords: list[str]) -> RegistryLoginCache:
    """A login cache whose fetches hand out `passwords` in turn, each valid for 12 hours."""
    issued = iter(passwords)
    return RegistryLoginCache(
        lambda: RegistryLogin(
            username="AWS", password=SecretStr(next(issued)), expires_at=datetime.now(UTC) + timedelta(hours=12)
        )
    )


def test_rejected_login_replaced_once(host: str, no_wait: list[float], logged: list[str]) -> None:
    StandInRegistry.statuses = [401]
    logins = cache_issuing(["stale", "fresh"])

    digest = find_manifest_digest(host, "prefect-flows/hello", "0123456789abcdef", logins)

    assert digest == DIGEST
    assert StandInRegistry.passwords == ["stale", "fresh"]
    assert logins.fetches == 2
    assert no_wait == []
    assert any("rejected the cached login with HTTP 401, so a new one is fetched" in m for m in logged)
    assert all("stale" not in m and "fresh" not in m for m in logged)


def test_login_rejected_twice_names_setting(host: str, no_wait: list[float]) -> None:
    StandInRegistry.statuses = [401, 401]
    logins = cache_issuing(["first", "second"])

    with pytest.raises(RegistryError, match=r"rejected the login .*check that META_FLOWS_REGISTRY_HOST"):
        find_manifest_digest(host, "prefect-flows/hello", "0123456789abcdef", logins)

    assert len(StandInRegistry.seen) == 2
    assert logins.fetches == 2


def test_manifest_read_digest_and_size(host: str) -> None:
    facts = read_manifest(f"{host}/prefect-flows/hello:0123456789abcdef", LOGIN)

    assert facts is not None
    assert facts.digest == DIGEST
    assert facts.size_bytes == 21300
    assert StandInRegistry.seen == ["GET /v2/prefect-flows/hello/manifests/0123456789abcdef"]


def test_manifest_read_absent_and_index(host: str) -> None:
    StandInRegistry.statuses = [404]
    assert read_manifest(f"{host}/prefect-flows/hello:missing", LOGIN) is None

    StandInRegistry.manifest = {"schemaVersion": 2, "manifests": [{"digest": DIGEST}]}
    facts = read_manifest(f"{host}/prefect-flows/hello:index", LOGIN)
    assert facts is not None
    assert facts.size_bytes is None
