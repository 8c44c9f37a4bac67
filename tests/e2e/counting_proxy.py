"""A small HTTP/1.1 forwarding proxy on 127.0.0.1 that records every request passing through.

It parses requests from the client (method, path, headers, body by Content-Length) and pipes
responses back unparsed, so keep-alive and streamed responses work. A WebSocket upgrade (Prefect's
event stream) is recorded, then tunnelled both ways untouched.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field

from devstack.fault_proxy import Request


@dataclass
class CountingProxy:
    """Forward 127.0.0.1:`port` to 127.0.0.1:`upstream_port` and record each request."""

    port: int
    upstream_port: int
    requests: list[Request] = field(default_factory=list)
    _server: socket.socket | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        server = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        server.settimeout(0.2)
        self._server = server
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def _accept_loop(self) -> None:
        while self._server is not None:
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
        reader = client.makefile("rb")
        try:
            while True:
                request = _read_request(reader)
                if request is None:
                    break
                raw, recorded = request
                with self._lock:
                    self.requests.append(recorded)
                upstream.sendall(raw)
                if recorded.headers.get("upgrade", "").lower() == "websocket":
                    _pipe_reader(reader, upstream)
                    break
        except OSError:
            pass
        finally:
            try:
                upstream.shutdown(socket.SHUT_WR)
            except OSError:
                pass


def _read_request(reader: object) -> tuple[bytes, Request] | None:
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = reader.readline()  # type: ignore[attr-defined]
        if not line:
            return None
        head += line
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _read_chunked(reader)
        raw_body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
    else:
        body = reader.read(int(headers.get("content-length", "0") or 0))  # type: ignore[attr-defined]
        raw_body = body
    return head + raw_body, Request(method, path, headers, body)


def _read_chunked(reader: object) -> bytes:
    body = b""
    while True:
        size = int(reader.readline().strip().split(b";")[0], 16)  # type: ignore[attr-defined]
        if size == 0:
            reader.readline()  # type: ignore[attr-defined]
            return body
        body += reader.read(size)  # type: ignore[attr-defined]
        reader.readline()  # type: ignore[attr-defined]


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            target.sendall(chunk)
    except OSError:
        pass
    finally:
        for sock in (target, source):
            try:
                sock.close()
            except OSError:
                pass


def _pipe_reader(reader: object, target: socket.socket) -> None:
    try:
        while chunk := reader.read1(65536):  # type: ignore[attr-defined]
            target.sendall(chunk)
    except OSError:
        pass
