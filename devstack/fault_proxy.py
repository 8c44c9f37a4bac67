"""Dev only: a fault-injecting HTTP proxy in front of the AWS emulator or the registry.

moto never fails a call and never throttles, so tests that claim "retried" or "not throttled"
prove nothing against it alone. The proxy forwards to one upstream on 127.0.0.1 and records
every request, with two ways to make it fail:

- rules, set by a test in the same process: a predicate on the request, a fault (a reply such
  as a throttling error, a request body cut off halfway, or a request held unanswered), and how
  many times it fires;
- a registration limiter that applies ECS's limits to RegisterTaskDefinition: a token bucket
  per proxy, as ECS keeps one per account and region (ECS's sustained rate is one call a
  second), and one registration in flight per family. A rejected call gets the
  ClientException ECS returns then ("Too many concurrent attempts to create a new revision of
  the specified family.").

GET /_fault_proxy/stats returns the limiter's counts as JSON. The server is threaded, binds
127.0.0.1 only, and every socket has a timeout. From the command line it runs the limiter
only: `python -m devstack.fault_proxy --port 5051`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

REGISTER_TARGET = "AmazonEC2ContainerServiceV20141113.RegisterTaskDefinition"
THROTTLE_MESSAGE = "Too many concurrent attempts to create a new revision of the specified family."
STATS_PATH = "/_fault_proxy/stats"
SOCKET_TIMEOUT_SECONDS = 120
HOLD_TIMEOUT_SECONDS = 300
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}

logger = logging.getLogger("devstack.fault_proxy")


@dataclass
class Request:
    """One request as the proxy received it, body de-chunked."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def aws_action(self) -> str:
        """Return the AWS API action: from X-Amz-Target (JSON protocols) or Action= (query protocol)."""
        target = self.headers.get("x-amz-target", "")
        if target:
            return target.rpartition(".")[2]
        if self.body and b"Action=" in self.body:
            return parse_qs(self.body.decode(errors="replace")).get("Action", [""])[0]
        return ""


@dataclass
class Fault:
    """A fault: what the proxy does instead of forwarding.

    Its kind is "answer" (reply with status, headers and body), "cut" (cut the request body
    off) or "hold" (keep the request waiting).
    """

    kind: str
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass
class Rule:
    """A fault for requests matching `match`, fired at most `times` times (None: every time)."""

    match: Callable[[Request], bool]
    fault: Fault
    times: int | None = 1
    fired: int = 0


def aws_json_error(code: str, message: str, status: int = 400) -> Fault:
    """Build an error in the AWS JSON 1.1 protocol shape that ECS and ECR use."""
    body = json.dumps({"__type": code, "message": message}).encode()
    headers = {"Content-Type": "application/x-amz-json-1.1", "x-amzn-ErrorType": code}
    return Fault("answer", status, headers, body)


def aws_query_error(code: str, message: str, status: int = 400) -> Fault:
    """Build an error in the AWS query protocol shape that STS and IAM use."""
    kind = "Receiver" if status >= 500 else "Sender"
    body = (
        f"<ErrorResponse><Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error>"
        "<RequestId>fault-proxy</RequestId></ErrorResponse>"
    ).encode()
    return Fault("answer", status, {"Content-Type": "text/xml"}, body)


def cut_body() -> Fault:
    """Read half of the request body, then close the connection without a response."""
    return Fault("cut")


def hold() -> Fault:
    """Keep the request waiting, unanswered, until the proxy stops."""
    return Fault("hold")


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


def loopback_address(upstream: str) -> tuple[str, int]:
    """Split `127.0.0.1:PORT` or `http://127.0.0.1:PORT` into host and port; reject other hosts."""
    parts = urlsplit(upstream if "//" in upstream else f"//{upstream}")
    if parts.hostname not in ("127.0.0.1", "localhost") or parts.port is None:
        raise ValueError(f"upstream {upstream} is not 127.0.0.1:PORT: the fault proxy forwards to loopback only")
    return "127.0.0.1", parts.port


class FaultProxy:
    """The proxy server; use as a context manager, or call start() and stop().

    Port 0 binds a free port; `address` gives the one bound. With a `limiter`, the proxy applies
    ECS's RegisterTaskDefinition limits to the requests that no rule replies to. With `record`
    (the default), every request, headers and body, is kept in `requests` until cleared.
    """

    def __init__(
        self, port: int, upstream: str, limiter: RegistrationLimiter | None = None, record: bool = True
    ) -> None:
        self.upstream_host, self.upstream_port = loopback_address(upstream)
        self.limiter = limiter
        self.record = record
        self.rules: list[Rule] = []
        self.requests: list[Request] = []
        self.request_held = threading.Event()
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"fault-proxy-{self.port}", daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def add_rule(self, match: Callable[[Request], bool], fault: Fault, times: int | None = 1) -> Rule:
        rule = Rule(match, fault, times)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear_rules(self) -> None:
        with self._lock:
            self.rules.clear()

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *_: Any) -> None:
        self.stop()

    def stats(self) -> dict[str, int]:
        return self.limiter.stats() if self.limiter else {}

    def _pick_fault(self, request: Request) -> Fault | None:
        with self._lock:
            if self.record:
                self.requests.append(request)
            for rule in self.rules:
                if (rule.times is None or rule.fired < rule.times) and rule.match(request):
                    rule.fired += 1
                    return rule.fault
        return None

    def _rules_want_cut(self, request: Request) -> bool:
        with self._lock:
            return any(
                rule.fault.kind == "cut" and (rule.times is None or rule.fired < rule.times) and rule.match(request)
                for rule in self.rules
            )

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = SOCKET_TIMEOUT_SECONDS

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                logger.debug(format, *args)

            def _read_body(self, limit: int | None = None) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    return self._read_chunked(limit)
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length if limit is None else min(length, limit))

            def _read_chunked(self, limit: int | None) -> bytes:
                chunks: list[bytes] = []
                total = 0
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                    total += size
                    if limit is not None and total >= limit:
                        return b"".join(chunks)

            def _handle(self) -> None:
                if self.command == "GET" and self.path == STATS_PATH:
                    self._answer(200, {"Content-Type": "application/json"}, json.dumps(proxy.stats()).encode())
                    return
                headers = {name.lower(): value for name, value in self.headers.items()}
                expected = int(self.headers.get("Content-Length") or 0)
                peek = Request(self.command, self.path, headers, b"")
                if proxy._rules_want_cut(peek):
                    self._read_body(limit=max(1, expected // 2) if expected else 1024)
                    proxy._pick_fault(peek)
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                request = Request(self.command, self.path, headers, self._read_body())
                fault = proxy._pick_fault(request)
                if fault is not None and fault.kind == "hold":
                    proxy.request_held.set()
                    proxy._release.wait(HOLD_TIMEOUT_SECONDS)
                    self.close_connection = True
                    return
                if fault is not None:
                    self._answer(fault.status, fault.headers, fault.body)
                    return
                if proxy.limiter is not None and headers.get("x-amz-target") == REGISTER_TARGET:
                    self._forward_registration(proxy.limiter, request)
                    return
                self._forward(request)

            def _forward_registration(self, limiter: RegistrationLimiter, request: Request) -> None:
                family = family_of(request.body)
                if not limiter.admit(family):
                    logger.info("RegisterTaskDefinition of family %s throttled", family)
                    self._answer(*throttle_reply())
                    return
                try:
                    self._forward(request)
                finally:
                    limiter.release(family)

            def _forward(self, request: Request) -> None:
                upstream = http.client.HTTPConnection(
                    proxy.upstream_host, proxy.upstream_port, timeout=SOCKET_TIMEOUT_SECONDS
                )
                headers = {name: value for name, value in self.headers.items() if name.lower() not in HOP_BY_HOP}
                headers["Content-Length"] = str(len(request.body))
                try:
                    upstream.request(request.method, request.path, body=request.body, headers=headers)
                    reply = upstream.getresponse()
                    body = reply.read()
                    reply_headers = {k: v for k, v in reply.getheaders() if k.lower() not in HOP_BY_HOP}
                except (OSError, http.client.HTTPException) as exc:
                    logger.error(
                        "upstream 127.0.0.1:%d failed for %s %s: %s",
                        proxy.upstream_port,
                        request.method,
                        request.path,
                        exc,
                    )
                    self._answer(502, {"Content-Type": "text/plain"}, f"upstream failed: {exc}".encode())
                    return
                finally:
                    upstream.close()
                self._answer(reply.status, reply_headers, body, head=request.method == "HEAD")

            def _answer(self, status: int, headers: dict[str, str], body: bytes, head: bool = False) -> None:
                self.send_response_only(status)
                for name, value in headers.items():
                    if name.lower() != "content-length":
                        self.send_header(name, value)
                length = headers.get("Content-Length") or headers.get("content-length") if head else None
                self.send_header("Content-Length", str(length if length is not None else len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

        return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack.fault_proxy", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1 to listen on")
    parser.add_argument("--upstream", default="http://127.0.0.1:5001", help="the emulator's URL (loopback only)")
    parser.add_argument("--rate", type=float, default=1.0, help="RegisterTaskDefinition calls a second, sustained")
    parser.add_argument("--burst", type=float, default=1.0, help="RegisterTaskDefinition calls stored as a burst")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        limiter = RegistrationLimiter(TokenBucket(rate=args.rate, burst=args.burst))
        # Run from the command line, nothing reads the recorded requests, so none are kept.
        proxy = FaultProxy(args.port, args.upstream, limiter, record=False)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    with proxy:
        logger.info(
            "fault proxy on %s to %s: RegisterTaskDefinition %g/s, burst %g",
            proxy.address,
            args.upstream,
            args.rate,
            args.burst,
        )
        stopped.wait()
    logger.info("fault proxy on %s stopped", proxy.address)


if __name__ == "__main__":
    main()
