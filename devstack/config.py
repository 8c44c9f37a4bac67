"""Fixed addresses, credentials, paths and the environment the local stack exports."""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

LOOPBACK = "127.0.0.1"
REGISTRY_PORT = 5000
MOTO_PORT = 5001
PREFECT_PORT = 4200

PREFECT_API_URL = f"http://{LOOPBACK}:{PREFECT_PORT}/api"
MOTO_URL = f"http://{LOOPBACK}:{MOTO_PORT}"
REGISTRY_HOST = f"{LOOPBACK}:{REGISTRY_PORT}"

AWS_REGION = "us-east-1"
# moto's fixed account id and the dummy keys moto accepts. None of them is a real credential.
AWS_ACCOUNT_ID = "123456789012"
AWS_DUMMY_KEY = "testing"

# moto 5.2.5's ECR GetAuthorizationToken always returns this user and password (base64 of
# "AWS:123456789012-auth-token"), so the registry's htpasswd file accepts exactly that pair.
REGISTRY_USER = "AWS"
REGISTRY_PASSWORD = f"{AWS_ACCOUNT_ID}-auth-token"

DEFAULT_PREFECT_VERSION = "3.9.1"
BASE_IMAGE_REPOSITORY = "devstack/prefect-base"
CONTAINER_MEMORY_MIB = 512

DEFAULT_WORK_POOL = "ecs-pool"
DEFAULT_DEPLOYER_POOL = "deployer"


@dataclass(frozen=True)
class StackPaths:
    """Locations inside the state folder, below which the stack writes all its files."""

    root: Path

    @classmethod
    def from_env(cls) -> StackPaths:
        override = os.environ.get("DEVSTACK_STATE_DIR")
        root = Path(override) if override else REPO_ROOT / ".stack"
        return cls(root.resolve())

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def env_file(self) -> Path:
        return self.root / "env"

    @property
    def lock_file(self) -> Path:
        return self.run / "devstack.lock"

    @property
    def docker(self) -> Path:
        return self.root / "docker"

    @property
    def registry(self) -> Path:
        return self.root / "registry"

    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect"

    @property
    def rootfs(self) -> Path:
        return self.root / "rootfs"

    def log(self, part: str) -> Path:
        return self.logs / f"{part}.log"

    def pidfile(self, part: str) -> Path:
        return self.run / f"{part}.pid"

    def ensure(self) -> None:
        """Create the state folder, and a `.gitignore` in it so git never lists its content."""
        for folder in (self.root, self.logs, self.run):
            folder.mkdir(parents=True, exist_ok=True)
        ignore = self.root / ".gitignore"
        if not ignore.exists():
            ignore.write_text("*\n")


def read_prefect_pin(requirements: Path = REPO_ROOT / "requirements.txt") -> str:
    """Return the exact Prefect version pinned in `requirements`, or the default when absent."""
    if not requirements.is_file():
        return DEFAULT_PREFECT_VERSION
    return parse_prefect_pin(requirements.read_text()) or DEFAULT_PREFECT_VERSION


def parse_prefect_pin(text: str) -> str | None:
    """Return X from a `prefect==X` line (extras and comments allowed), or None."""
    pattern = re.compile(r"^\s*prefect\s*(\[[^\]]*\])?\s*==\s*([A-Za-z0-9.+!-]+)", re.IGNORECASE)
    for line in text.splitlines():
        match = pattern.match(line.split("#", 1)[0])
        if match:
            return match.group(2)
    return None


def base_image_ref(prefect_version: str) -> str:
    return f"{BASE_IMAGE_REPOSITORY}:{prefect_version}"


def stack_env(paths: StackPaths, docker_host: str, base_image: str) -> dict[str, str]:
    """Return the variables that point clients at the local stack, in file order.

    This is the one list of exported variables: add new ones here.
    """
    return {
        "PREFECT_API_URL": PREFECT_API_URL,
        "AWS_ENDPOINT_URL": MOTO_URL,
        "AWS_ACCESS_KEY_ID": AWS_DUMMY_KEY,
        "AWS_SECRET_ACCESS_KEY": AWS_DUMMY_KEY,
        "AWS_DEFAULT_REGION": AWS_REGION,
        "AWS_REGION": AWS_REGION,
        "DOCKER_HOST": docker_host,
        "META_FLOWS_REGISTRY_HOST": REGISTRY_HOST,
        "META_FLOWS_BASE_IMAGE": base_image,
        "META_FLOWS_CONTAINER_MEMORY": str(CONTAINER_MEMORY_MIB),
        "DEVSTACK_STATE_DIR": str(paths.root),
    }


def render_env_file(env: dict[str, str]) -> str:
    """Render `env` as shell `export K=V` lines, quoted so `eval` keeps each value whole."""
    lines = [f"export {key}={shlex.quote(value)}" for key, value in env.items()]
    return "\n".join(lines) + "\n"


def parse_env_file(text: str) -> dict[str, str]:
    """Read back the variables written by `render_env_file`."""
    env: dict[str, str] = {}
    for line in text.splitlines():
        if not line.startswith("export "):
            continue
        key, _, raw = line[len("export ") :].partition("=")
        parts = shlex.split(raw)
        env[key] = parts[0] if parts else ""
    return env
