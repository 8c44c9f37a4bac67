"""The fault proxy: ECS's RegisterTaskDefinition limits in front of a stand-in emulator."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from devstack.fault_proxy import (
    REGISTER_TARGET,
    STATS_PATH,
    THROTTLE_MESSAGE,
    RegistrationLimiter,
    TokenBucket,
    make_handler,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_one_a_second() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=1.0, burst=1.0, clock=clock)

    assert bucket.take()
    assert not bucket.take()
    clock.now += 0.5
    assert not bucket.take()
    clock.now += 0.5
    assert bucket.take()


def test_token_bucket_burst_refills_to_capacity_only() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=1.0, burst=2.0, clock=clock)
    clock.now += 60

    assert bucket.take()
    assert bucket.take()
    assert not bucket.take()


def test_limiter_rejects_second_call_in_same_family() -> None:
    clock = FakeClock()
    limiter = RegistrationLimiter(TokenBucket(rate=10.0, burst=10.0, clock=clock))

    assert limiter.admit("a")
    assert not limiter.admit("a")
    assert limiter.admit("b")
    limiter.release("a")
    assert limiter.admit("a")
    assert limiter.stats() == {"register_forwarded": 3, "register_throttled": 1}


class Upstream(BaseHTTPRequestHandler):
    """A stand-in emulator that echoes the target and body it received."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - name fixed by BaseHTTPRequestHandler
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        reply = json.dumps({"target": self.headers.get("X-Amz-Target"), "body": body.decode()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return None


def serve(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def proxy_url() -> Iterator[str]:
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    serve(upstream)
    # A bucket that never refills within a test, so the second registration is always throttled.
    limiter = RegistrationLimiter(TokenBucket(rate=1e-9, burst=1.0))
    handler = make_handler(f"http://127.0.0.1:{upstream.server_address[1]}", limiter)
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    serve(proxy)
    yield f"http://127.0.0.1:{proxy.server_address[1]}"
    proxy.shutdown()
    upstream.shutdown()
    proxy.server_close()
    upstream.server_close()


def register(url: str, family: str) -> requests.Response:
    headers = {"X-Amz-Target": REGISTER_TARGET, "Content-Type": "application/x-amz-json-1.1"}
    return requests.post(url + "/", data=json.dumps({"family": family}), headers=headers, timeout=10)


def test_proxy_forwards_other_calls_unchanged(proxy_url: str) -> None:
    headers = {"X-Amz-Target": "AmazonEC2ContainerServiceV20141113.DescribeTaskDefinition"}
    reply = requests.post(proxy_url + "/", data=b'{"taskDefinition": "f"}', headers=headers, timeout=10)

    assert reply.status_code == 200
    assert reply.json() == {
        "target": "AmazonEC2ContainerServiceV20141113.DescribeTaskDefinition",
        "body": '{"taskDefinition": "f"}',
    }


def test_proxy_throttles_registration_over_rate(proxy_url: str) -> None:
    first = register(proxy_url, "f")
    second = register(proxy_url, "f")

    assert first.status_code == 200
    assert second.status_code == 400
    assert second.json() == {"__type": "ClientException", "message": THROTTLE_MESSAGE}
    stats = requests.get(proxy_url + STATS_PATH, timeout=10).json()
    assert stats == {"register_forwarded": 1, "register_throttled": 1}
