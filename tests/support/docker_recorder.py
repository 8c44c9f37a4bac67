"""A recording relay for the Docker API: a unix socket of the test's own, in front of the engine's.

The product talks to it through DOCKER_HOST. Every byte a client sends is kept per connection,
so a test can scan the build context, the build args, container commands and the request
headers for secrets. The engine's responses are relayed, not kept.
"""

from __future__ import annotations

import base64
import json
import os
import re
import selectors
import socket
import threading
from pathlib import Path

BUFFER = 65536
IDLE_TIMEOUT_SECONDS = 600
REQUEST_LINE = re.compile(rb"^(GET|POST|PUT|DELETE|HEAD) (\S+) HTTP/1\.[01]\r$", re.M)
REGISTRY_AUTH = re.compile(rb"^X-Registry-Auth: (\S+)\r$", re.M | re.I)


class DockerRecorder:
    """Relay `socket_path` to the engine at `engine_path`, recording what clients send."""

    def __init__(self, socket_path: Path, engine_path: str) -> None:
        self.socket_path = socket_path
        self.engine_path = engine_path
        self.sent: list[bytearray] = []
        self._lock = threading.Lock()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="docker-recorder", daemon=True)

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self) -> DockerRecorder:
        self._server.bind(str(self.socket_path))
        os.chmod(self.socket_path, 0o600)
        self._server.listen(16)
        self._server.settimeout(0.5)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=10)
        self._server.close()
        self.socket_path.unlink(missing_ok=True)

    def __enter__(self) -> DockerRecorder:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def all_sent(self) -> bytes:
        with self._lock:
            return b"".join(self.sent)

    def request_lines(self) -> list[str]:
        return [m.group(2).decode(errors="replace") for m in REQUEST_LINE.finditer(self.all_sent())]

    def registry_auth_headers(self) -> list[dict[str, str]]:
        """Decode every X-Registry-Auth header sent (base64url JSON)."""
        decoded = []
        for match in REGISTRY_AUTH.finditer(self.all_sent()):
            value = match.group(1)
            decoded.append(json.loads(base64.urlsafe_b64decode(value + b"=" * (-len(value) % 4))))
        return decoded

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        engine = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        engine.connect(self.engine_path)
        record = bytearray()
        with self._lock:
            self.sent.append(record)
        selector = selectors.DefaultSelector()
        selector.register(client, selectors.EVENT_READ, engine)
        selector.register(engine, selectors.EVENT_READ, client)
        try:
            while not self._stopped.is_set():
                events = selector.select(timeout=IDLE_TIMEOUT_SECONDS)
                if not events:
                    return
                for key, _ in events:
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = source.recv(BUFFER)
                    if not data:
                        return
                    key.data.sendall(data)
                    if source is client:
                        with self._lock:
                            record += data
        except OSError:
            return
        finally:
            selector.close()
            client.close()
            engine.close()
