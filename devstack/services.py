"""The stack's network services: registry, AWS emulator (moto) and Prefect server."""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from devstack import postgres
from devstack.config import (
    AWS_ACCOUNT_ID,
    AWS_DUMMY_KEY,
    AWS_REGION,
    LOOPBACK,
    MOTO_PORT,
    MOTO_URL,
    PREFECT_API_URL,
    PREFECT_PORT,
    REGISTRY_HOST,
    REGISTRY_PASSWORD,
    REGISTRY_PORT,
    REGISTRY_USER,
    StackPaths,
)

REGISTRY_BINARY = "/usr/bin/docker-registry"
HTPASSWD_BINARY = "htpasswd"

# Requests to the stack's own services must never go through a proxy from the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Service:
    """A background process of the stack that listens on one port of 127.0.0.1."""

    key: str  # name of its pidfile and log file
    label: str  # name shown to people
    port: int
    url: str
    timeout: float  # seconds to wait for the first healthy check after start
    prepare: Callable[[StackPaths], None]  # writes config files before each start
    argv: Callable[[StackPaths], list[str]]
    env: Callable[[StackPaths], dict[str, str]]
    healthy: Callable[[], bool]
    health_check: str  # what `healthy` checks, for error messages


def venv_tool(name: str) -> str:
    """Return the console script `name` installed beside the running interpreter."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found beside {sys.executable} or on PATH: run scripts/install.sh")
    return found


def http_status(url: str, headers: dict[str, str] | None = None, timeout: float = 2.0) -> int | None:
    """Return the HTTP status of GET `url`, or None when the request got no response."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with _DIRECT.open(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, OSError):
        return None


# --- registry -------------------------------------------------------------------------------


def registry_auth_header() -> dict[str, str]:
    token = base64.b64encode(f"{REGISTRY_USER}:{REGISTRY_PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def registry_healthy() -> bool:
    """Return True when /v2/ returns 401 without credentials and 200 with the emulator's ones."""
    url = f"http://{REGISTRY_HOST}/v2/"
    if http_status(url) != 401:
        return False
    return http_status(url, registry_auth_header()) == 200


def render_registry_config(data_dir: Path, htpasswd: Path, http_secret: str) -> str:
    """Render the registry's YAML config, with values written as JSON strings (valid YAML scalars)."""
    return "\n".join(
        [
            "version: 0.1",
            "log:",
            "  level: info",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {json.dumps(str(data_dir))}",
            "  delete:",
            "    enabled: true",
            "http:",
            f"  addr: {json.dumps(REGISTRY_HOST)}",
            f"  secret: {json.dumps(http_secret)}",
            "auth:",
            "  htpasswd:",
            "    realm: devstack-registry",
            f"    path: {json.dumps(str(htpasswd))}",
            "",
        ]
    )


def prepare_registry(paths: StackPaths) -> None:
    folder = paths.registry
    (folder / "data").mkdir(parents=True, exist_ok=True)
    htpasswd = folder / "htpasswd"
    if not htpasswd_accepts(htpasswd):
        write_htpasswd(htpasswd)
    config = render_registry_config(folder / "data", htpasswd, registry_http_secret(folder))
    write_private(folder / "config.yml", config)


def registry_http_secret(folder: Path) -> str:
    """Return the registry's upload-signing secret, made once and kept in the state folder."""
    secret_file = folder / "http-secret"
    if secret_file.is_file():
        return secret_file.read_text().strip()
    secret = secrets.token_hex(32)
    write_private(secret_file, secret + "\n")
    return secret


def write_htpasswd(path: Path) -> None:
    """Write a bcrypt htpasswd entry, passing the password to htpasswd on stdin and not in argv."""
    result = subprocess.run(
        [HTPASSWD_BINARY, "-n", "-i", "-B", REGISTRY_USER],
        input=REGISTRY_PASSWORD,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"htpasswd failed with code {result.returncode}: {result.stderr.strip()}")
    write_private(path, result.stdout.strip() + "\n")


def htpasswd_accepts(path: Path) -> bool:
    if not path.is_file():
        return False
    result = subprocess.run(
        [HTPASSWD_BINARY, "-v", "-i", str(path), REGISTRY_USER],
        input=REGISTRY_PASSWORD,
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode == 0


def write_private(path: Path, content: str) -> None:
    """Write `content` to `path` readable by the owner only."""
    partial = path.with_suffix(path.suffix + ".tmp")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as stream:
        stream.write(content)
    partial.replace(path)


def registry_argv(paths: StackPaths) -> list[str]:
    return [REGISTRY_BINARY, "serve", str(paths.registry / "config.yml")]


# --- AWS emulator ---------------------------------------------------------------------------


def moto_env(paths: StackPaths) -> dict[str, str]:
    """Environment for moto: dummy keys, no instance metadata, and clients aimed at itself."""
    return {
        "AWS_ACCESS_KEY_ID": AWS_DUMMY_KEY,
        "AWS_SECRET_ACCESS_KEY": AWS_DUMMY_KEY,
        "AWS_DEFAULT_REGION": AWS_REGION,
        "AWS_REGION": AWS_REGION,
        "AWS_ENDPOINT_URL": MOTO_URL,
        "AWS_EC2_METADATA_DISABLED": "true",
        "MOTO_PORT": str(MOTO_PORT),
        # moto calls EventBridge targets of type HTTP unless this is false. The stack uses SQS targets.
        "MOTO_EVENTS_INVOKE_HTTP": "false",
        "NO_PROXY": "*",
    }


def moto_argv(paths: StackPaths) -> list[str]:
    return [venv_tool("moto_server"), "--host", LOOPBACK, "--port", str(MOTO_PORT)]


def moto_healthy() -> bool:
    """Return True when STS GetCallerIdentity returns moto's account."""
    import boto3
    import botocore.config
    import botocore.exceptions

    client = boto3.client(
        "sts",
        endpoint_url=MOTO_URL,
        region_name=AWS_REGION,
        aws_access_key_id=AWS_DUMMY_KEY,
        aws_secret_access_key=AWS_DUMMY_KEY,
        config=botocore.config.Config(
            connect_timeout=2,
            read_timeout=5,
            retries={"max_attempts": 1},
        ),
    )
    try:
        identity = client.get_caller_identity()
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
        return False
    return bool(identity.get("Account") == AWS_ACCOUNT_ID)


# --- Prefect server -------------------------------------------------------------------------


def prefect_database_url(paths: StackPaths) -> str:
    """Return the Prefect server's database: SQLite in the state folder, or the opt-in PostgreSQL."""
    if postgres.prefect_database() == "postgres":
        return postgres.database_url(postgres.postgres_port())
    return f"sqlite+aiosqlite:///{paths.prefect_home / 'prefect.db'}"


def prefect_env(paths: StackPaths) -> dict[str, str]:
    home = paths.prefect_home
    return {
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": prefect_database_url(paths),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_API_URL": PREFECT_API_URL,
        "PREFECT_API_URL": PREFECT_API_URL,
        "NO_PROXY": "*",
    }


def prepare_prefect(paths: StackPaths) -> None:
    paths.prefect_home.mkdir(parents=True, exist_ok=True)
    if postgres.prefect_database() == "postgres":
        # Services start together; the Prefect server exits when its database does not respond.
        postgres.wait_until_ready(postgres.postgres_port())


def postgres_service() -> Service:
    port = postgres.postgres_port()
    return Service(
        key="postgres",
        label="postgresql",
        port=port,
        url=f"postgresql://{LOOPBACK}:{port}",
        timeout=postgres.READY_TIMEOUT_SECONDS,
        prepare=lambda paths: postgres.prepare_cluster(paths.root / "postgres"),
        argv=lambda paths: postgres.server_argv(paths.root / "postgres", port),
        env=lambda paths: {},
        healthy=lambda: postgres.is_ready(port),
        health_check=f"pg_isready on {LOOPBACK}:{port}",
    )


def prefect_argv(paths: StackPaths) -> list[str]:
    return [
        venv_tool("prefect"),
        "server",
        "start",
        "--host",
        LOOPBACK,
        "--port",
        str(PREFECT_PORT),
    ]


def prefect_healthy() -> bool:
    return http_status(f"{PREFECT_API_URL}/health") == 200


def services() -> list[Service]:
    """Return the services in start order; PostgreSQL only with DEVSTACK_PREFECT_DB=postgres."""
    database = [postgres_service()] if postgres.prefect_database() == "postgres" else []
    return database + [
        Service(
            key="registry",
            label="registry",
            port=REGISTRY_PORT,
            url=f"http://{REGISTRY_HOST}",
            timeout=30.0,
            prepare=prepare_registry,
            argv=registry_argv,
            env=lambda paths: {},
            healthy=registry_healthy,
            health_check=f"GET http://{REGISTRY_HOST}/v2/ returns 401, and 200 with credentials",
        ),
        Service(
            key="moto",
            label="aws emulator",
            port=MOTO_PORT,
            url=MOTO_URL,
            timeout=60.0,
            prepare=lambda paths: None,
            argv=moto_argv,
            env=moto_env,
            healthy=moto_healthy,
            health_check=f"STS GetCallerIdentity at {MOTO_URL}",
        ),
        Service(
            key="prefect-server",
            label="prefect server",
            port=PREFECT_PORT,
            url=f"http://{LOOPBACK}:{PREFECT_PORT}",
            timeout=180.0,
            prepare=prepare_prefect,
            argv=prefect_argv,
            env=prefect_env,
            healthy=prefect_healthy,
            health_check=f"GET {PREFECT_API_URL}/health returns 200",
        ),
    ]
