"""Opt-in PostgreSQL for the stack's Prefect server (Debian's `postgresql` package).

SQLite serialises every write, which limits a Prefect server under many concurrent flow and
task runs. With `DEVSTACK_PREFECT_DB=postgres` the stack runs a PostgreSQL cluster from its
state folder on 127.0.0.1 (port `DEVSTACK_POSTGRES_PORT`, default 5432) and points the
Prefect server at it. The cluster accepts connections from 127.0.0.1 only, without a password
(trust authentication), which is for a dev stack only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from devstack.config import LOOPBACK

DATABASE_VARIABLE = "DEVSTACK_PREFECT_DB"
PORT_VARIABLE = "DEVSTACK_POSTGRES_PORT"
DATABASES = ("sqlite", "postgres")
DEFAULT_PORT = 5432
POSTGRES_ROOT = Path("/usr/lib/postgresql")
SYSTEM_USER = "postgres"
READY_TIMEOUT_SECONDS = 60.0
POLL_SECONDS = 0.2


def prefect_database() -> str:
    """Return the Prefect server's database chosen by DEVSTACK_PREFECT_DB: sqlite or postgres."""
    value = (os.environ.get(DATABASE_VARIABLE) or "sqlite").strip().lower()
    if value not in DATABASES:
        raise ValueError(f"{DATABASE_VARIABLE}={value!r} is invalid: use sqlite (the default) or postgres")
    return value


def postgres_port() -> int:
    raw = os.environ.get(PORT_VARIABLE) or str(DEFAULT_PORT)
    if not raw.isdigit() or not 1024 <= int(raw) <= 65535:
        raise ValueError(f"{PORT_VARIABLE}={raw!r} is invalid: use a port number from 1024 to 65535")
    return int(raw)


def database_url(port: int) -> str:
    """Return the SQLAlchemy URL of the cluster's `postgres` database for Prefect."""
    return f"postgresql+asyncpg://{SYSTEM_USER}@{LOOPBACK}:{port}/postgres"


def binary(name: str) -> str:
    """Return the path of a PostgreSQL server program from the newest installed major version."""
    versions = sorted(POSTGRES_ROOT.glob("*/bin"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    for folder in reversed(versions):
        if (folder / name).exists():
            return str(folder / name)
    raise RuntimeError(
        f"PostgreSQL program {name} not found under {POSTGRES_ROOT}: run "
        f"`{DATABASE_VARIABLE}=postgres scripts/install.sh`, which installs Debian's postgresql"
    )


def as_system_user(argv: list[str]) -> list[str]:
    """Run `argv` as the postgres user when running as root, since PostgreSQL refuses root."""
    if os.geteuid() != 0:
        return argv
    setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
    return [setpriv, f"--reuid={SYSTEM_USER}", f"--regid={SYSTEM_USER}", "--init-groups", "--", *argv]


def prepare_cluster(data: Path) -> None:
    """Create the cluster in `data` once: UTF-8, trust authentication, owned by postgres."""
    if (data / "PG_VERSION").exists():
        return
    data.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(data, SYSTEM_USER, SYSTEM_USER)
    data.chmod(0o700)
    command = [binary("initdb"), "-D", str(data), "-U", SYSTEM_USER, "--auth=trust", "--encoding=UTF8"]
    result = subprocess.run(as_system_user(command), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"initdb failed with code {result.returncode} in {data}: {result.stderr.strip()}; the "
            f"{SYSTEM_USER} user must be able to enter every parent folder of {data}"
        )


def server_argv(data: Path, port: int) -> list[str]:
    """Return the command that runs the cluster on 127.0.0.1:`port` in the foreground."""
    command = [
        binary("postgres"),
        *("-D", str(data), "-p", str(port)),
        *("-c", f"listen_addresses={LOOPBACK}", "-c", f"unix_socket_directories={data}"),
        *("-c", "max_connections=200", "-c", "fsync=off", "-c", "synchronous_commit=off"),
    ]
    return as_system_user(command)


def is_ready(port: int) -> bool:
    """Return True when the cluster accepts connections on 127.0.0.1:`port`."""
    result = subprocess.run(
        [binary("pg_isready"), "-q", "-h", LOOPBACK, "-p", str(port)], capture_output=True, check=False
    )
    return result.returncode == 0


def wait_until_ready(port: int, timeout: float = READY_TIMEOUT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not is_ready(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"PostgreSQL on {LOOPBACK}:{port} not ready after {timeout:.0f} s")
        time.sleep(POLL_SECONDS)
