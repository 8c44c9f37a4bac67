"""The benchmark's own Prefect server, on PostgreSQL, beside the shared local stack.

The local stack's other parts (registry, emulator, Docker engine) are shared; the Prefect
server is the benchmark's own, so its database contains nothing but the benchmark's runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from devstack import postgres

READY_TIMEOUT_SECONDS = 180.0
POLL_SECONDS = 0.3


def wait_for_http(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with code {process.returncode} before it became healthy: read {log}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(POLL_SECONDS)
    raise RuntimeError(f"{url} not healthy after {timeout:.0f} s: read {log}")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)


@contextmanager
def prefect_server(state: Path, port: int, database: str, postgres_port: int) -> Iterator[str]:
    """Run a Prefect server on 127.0.0.1:`port`, on PostgreSQL or SQLite; yield its API URL."""
    state.mkdir(parents=True, exist_ok=True)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        if database == "postgres":
            data = state / "postgres"
            postgres.prepare_cluster(data)
            log = (state / "postgres.log").open("wb")
            processes.append(subprocess.Popen(postgres.server_argv(data, postgres_port), stdout=log, stderr=log))
            postgres.wait_until_ready(postgres_port)
            url = postgres.database_url(postgres_port)
        else:
            url = f"sqlite+aiosqlite:///{state / 'prefect.db'}"
        api = f"http://127.0.0.1:{port}/api"
        env = {
            **os.environ,
            "PREFECT_HOME": str(state / "prefect"),
            "PREFECT_API_DATABASE_CONNECTION_URL": url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_API_URL": api,
            "PREFECT_UI_API_URL": api,
        }
        server_log_path = state / "prefect-server.log"
        server_log = server_log_path.open("wb")
        command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
        server = subprocess.Popen(command, env=env, stdout=server_log, stderr=server_log)
        processes.append(server)
        wait_for_http(f"{api}/health", server, server_log_path, READY_TIMEOUT_SECONDS)
        yield api
    finally:
        for process in reversed(processes):
            stop(process)
