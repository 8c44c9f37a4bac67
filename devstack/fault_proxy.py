"""Dev only: an HTTP proxy in front of the AWS emulator that throttles RegisterTaskDefinition.

moto never throttles, so a test that claims "no registration throttling" proves nothing against
it alone. This proxy forwards every request to the emulator unchanged, except ECS
RegisterTaskDefinition calls, which it limits the way ECS does:

- a token bucket per proxy, as ECS keeps one per account and region: `rate` tokens a
  second (ECS's sustained rate for RegisterTaskDefinition is one a second), at most `burst`
  stored;
- one registration in flight per family.

A rejected call gets the ClientException ECS returns in that case ("Too many concurrent
attempts to create a new revision of the specified family."). GET /_fault_proxy/stats returns
the counts as JSON. Run: `python -m devstack.fault_proxy --port 5051`.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

REGISTER_TARGET = "AmazonEC2ContainerServiceV20141113.RegisterTaskDefinition"
THROTTLE_MESSAGE = "Too many concurrent attempts to create a new revision of the specified family."
STATS_PATH = "/_fault_proxy/stats"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "content-encoding"}
UPSTREAM_TIMEOUT_SECONDS = 60

logger = logging.getLogger("devstack.fault_proxy")


@dataclass
class TokenBucket:
    """A token bucket: `rate` tokens a second, at most `burst` stored, starting full."""

    rate: float
    burst: float
    clock: Callable[[], float] = time.monotonic
    tokens: float = field(init=False)
    updated: float = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = self.burst
        self.updated = self.clock()

    def take(self) -> bool:
        """Take one token if there is one; return whether the call may go ahead."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass
class RegistrationLimiter:
    """ECS's limits on RegisterTaskDefinition: the rate bucket and one call per family at once."""

    bucket: TokenBucket
    in_flight: set[str] = field(default_factory=set)
    forwarded: int = 0
    throttled: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def admit(self, family: str) -> bool:
        """Return True and mark the family busy when the call may go ahead; count a rejection."""
        with self.lock:
            if family in self.in_flight or not self.bucket.take():
                self.throttled += 1
                return False
            self.in_flight.add(family)
            self.forwarded += 1
            return True

    def release(self, family: str) -> None:
        with self.lock:
            self.in_flight.discard(family)

    def stats(self) -> dict[str, int]:
        with self.lock:
            return {"register_forwarded": self.forwarded, "register_throttled": self.throttled}


def throttle_reply() -> tuple[int, dict[str, str], bytes]:
    """Return the status, headers and body ECS sends for a throttled registration."""
    body = json.dumps({"__type": "ClientException", "message": THROTTLE_MESSAGE}).encode()
    return 400, {"Content-Type": "application/x-amz-json-1.1", "x-amzn-ErrorType": "ClientException"}, body


def family_of(body: bytes) -> str:
    try:
        return str(json.loads(body or b"{}").get("family", ""))
    except (ValueError, AttributeError):
        return ""


def make_handler(upstream: str, limiter: RegistrationLimiter) -> type[BaseHTTPRequestHandler]:
    session = requests.Session()
    session.trust_env = False  # the upstream is on loopback: never through a proxy from the environment

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - name fixed by BaseHTTPRequestHandler
            if self.path == STATS_PATH:
                body = json.dumps(limiter.stats()).encode()
                self.send(200, {"Content-Type": "application/json"}, body)
                return
            self.forward()

        def do_POST(self) -> None:  # noqa: N802
            self.forward()

        def do_PUT(self) -> None:  # noqa: N802
            self.forward()

        def do_DELETE(self) -> None:  # noqa: N802
            self.forward()

        def do_HEAD(self) -> None:  # noqa: N802
            self.forward()

        def forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.headers.get("X-Amz-Target") != REGISTER_TARGET:
                self.send(*self.relay(body))
                return
            family = family_of(body)
            if not limiter.admit(family):
                logger.info("RegisterTaskDefinition of family %s throttled", family)
                self.send(*throttle_reply())
                return
            try:
                self.send(*self.relay(body))
            finally:
                limiter.release(family)

        def relay(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            try:
                reply = session.request(
                    self.command, upstream + self.path, headers=headers, data=body, timeout=UPSTREAM_TIMEOUT_SECONDS
                )
            except requests.RequestException as exc:
                logger.error("upstream %s failed for %s %s: %s", upstream, self.command, self.path, exc)
                return 502, {"Content-Type": "text/plain"}, f"upstream failed: {exc}".encode()
            reply_headers = {k: v for k, v in reply.headers.items() if k.lower() not in HOP_BY_HOP}
            return reply.status_code, reply_headers, reply.content

        def send(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature fixed by the base class
            logger.debug(format, *args)

    return Handler


def require_loopback(url: str) -> None:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"upstream {url} is not on loopback: the fault proxy forwards to 127.0.0.1 only")


def serve(port: int, upstream: str, rate: float, burst: float) -> None:
    require_loopback(upstream)
    limiter = RegistrationLimiter(TokenBucket(rate=rate, burst=burst))
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(upstream.rstrip("/"), limiter))
    logger.info("fault proxy on 127.0.0.1:%d to %s: RegisterTaskDefinition %g/s, burst %g", port, upstream, rate, burst)
    try:
        server.serve_forever()
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack.fault_proxy", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1 to listen on")
    parser.add_argument("--upstream", default="http://127.0.0.1:5001", help="the emulator's URL (loopback only)")
    parser.add_argument("--rate", type=float, default=1.0, help="RegisterTaskDefinition calls a second, sustained")
    parser.add_argument("--burst", type=float, default=1.0, help="RegisterTaskDefinition calls stored as a burst")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    serve(args.port, args.upstream, args.rate, args.burst)


if __name__ == "__main__":
    main()
