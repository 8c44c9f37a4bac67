"""A fault-injecting HTTP proxy for tests: forwards to one upstream on 127.0.0.1, records every
request, and answers chosen requests with a fault instead.

It sits between the product and the AWS emulator (AWS_ENDPOINT_URL points at it) or the
registry (META_FLOWS_REGISTRY_HOST points at it, and the Docker engine pushes through it).
Faults are rules: a predicate on the request, an action, and how many times it fires. The
server is threaded, binds 127.0.0.1 only, and every socket has a timeout.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

SOCKET_TIMEOUT_SECONDS = 120
HOLD_TIMEOUT_SECONDS = 300
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


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
    """What to do instead of forwarding: answer (status, headers, body), cut the body, or hold."""

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
    """An error in the AWS JSON 1.1 protocol shape that ECS and ECR use."""
    body = json.dumps({"__type": code, "message": message}).encode()
    headers = {"Content-Type": "application/x-amz-json-1.1", "x-amzn-ErrorType": code}
    return Fault("answer", status, headers, body)


def aws_query_error(code: str, message: str, status: int = 400) -> Fault:
    """An error in the AWS query protocol shape that STS and IAM use."""
    kind = "Receiver" if status >= 500 else "Sender"
    body = (
        f"<ErrorResponse><Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error>"
        "<RequestId>fault-proxy</RequestId></ErrorResponse>"
    ).encode()
    return Fault("answer", status, {"Content-Type": "text/xml"}, body)


def cut_body() -> Fault:
    """Read half of the request body, then close the connection without an answer."""
    return Fault("cut")


def hold() -> Fault:
    """Keep the request waiting, unanswered, until the proxy stops."""
    return Fault("hold")


class FaultProxy:
    """The proxy server; use as a context manager, or call start() and stop()."""

    def __init__(self, port: int, upstream: str) -> None:
        self.port = port
        self.upstream_host, _, upstream_port = upstream.partition(":")
        self.upstream_port = int(upstream_port)
        if self.upstream_host != "127.0.0.1":
            raise ValueError(f"upstream {upstream} is not on 127.0.0.1")
        self.rules: list[Rule] = []
        self.requests: list[Request] = []
        self.held = threading.Event()
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"fault-proxy-{port}", daemon=True)

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

    def _pick_fault(self, request: Request) -> Fault | None:
        with self._lock:
            self.requests.append(request)
            for rule in self.rules:
                if (rule.times is None or rule.fired < rule.times) and rule.match(request):
                    rule.fired += 1
                    return rule.fault
        return None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = SOCKET_TIMEOUT_SECONDS

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                return

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
                    proxy.held.set()
                    proxy._release.wait(HOLD_TIMEOUT_SECONDS)
                    self.close_connection = True
                    return
                if fault is not None:
                    self._answer(fault.status, fault.headers, fault.body)
                    return
                self._forward(request)

            def _forward(self, request: Request) -> None:
                upstream = http.client.HTTPConnection(
                    proxy.upstream_host, proxy.upstream_port, timeout=SOCKET_TIMEOUT_SECONDS
                )
                headers = {
                    name: value for name, value in self.headers.items() if name.lower() not in HOP_BY_HOP
                }
                headers["Content-Length"] = str(len(request.body))
                try:
                    upstream.request(request.method, request.path, body=request.body, headers=headers)
                    reply = upstream.getresponse()
                    body = reply.read()
                    reply_headers = {k: v for k, v in reply.getheaders() if k.lower() not in HOP_BY_HOP}
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

    def _rules_want_cut(self, request: Request) -> bool:
        with self._lock:
            return any(
                rule.fault.kind == "cut" and (rule.times is None or rule.fired < rule.times) and rule.match(request)
                for rule in self.rules
            )
