"""The fault proxy in front of a stand-in emulator: rules, recording, and ECS's registration limits."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
import requests

from devstack.fault_proxy import (
    REGISTER_TARGET,
    STATS_PATH,
    THROTTLE_MESSAGE,
    FaultProxy,
    RegistrationLimiter,
    TokenBucket,
    aws_json_error,
    loopback_address,
)
from tests.support.http_server import loopback_server


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


@pytest.fixture
def upstream() -> Iterator[str]:
    with loopback_server(Upstream) as address:
        yield address


@pytest.fixture
def proxy(upstream: str) -> Iterator[FaultProxy]:
    # A bucket that never refills within a test, so the second registration is always throttled.
    limiter = RegistrationLimiter(TokenBucket(rate=1e-9, burst=1.0))
    with FaultProxy(0, f"http://{upstream}", limiter) as running:
        yield running


@pytest.fixture
def proxy_url(proxy: FaultProxy) -> str:
    return f"http://{proxy.address}"


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


def test_rule_answers_then_forwards(proxy: FaultProxy, proxy_url: str) -> None:
    target = "AmazonEC2ContainerServiceV20141113.ListClusters"
    proxy.add_rule(lambda r: r.aws_action == "ListClusters", aws_json_error("ThrottlingException", "Rate exceeded"), 2)

    replies = [
        requests.post(proxy_url + "/", data=b"{}", headers={"X-Amz-Target": target}, timeout=10) for _ in range(3)
    ]

    assert [r.status_code for r in replies] == [400, 400, 200]
    assert replies[0].json() == {"__type": "ThrottlingException", "message": "Rate exceeded"}
    assert [r.aws_action for r in proxy.requests] == ["ListClusters"] * 3


def test_stats_without_limiter_empty(upstream: str) -> None:
    with FaultProxy(0, upstream) as bare:
        stats = requests.get(f"http://{bare.address}{STATS_PATH}", timeout=10).json()

    assert stats == {}


@pytest.mark.parametrize("address", ["10.0.0.1:5001", "http://example.com:5001", "127.0.0.1"])
def test_upstream_off_loopback_rejected(address: str) -> None:
    with pytest.raises(ValueError, match="loopback only"):
        loopback_address(address)


def test_upstream_forms_accepted() -> None:
    assert loopback_address("127.0.0.1:5001") == ("127.0.0.1", 5001)
    assert loopback_address("http://127.0.0.1:5001/") == ("127.0.0.1", 5001)
    assert loopback_address("http://localhost:5001") == ("127.0.0.1", 5001)
