"""Choose the Docker engine: a reachable one from DOCKER_HOST, else a dockerd of the stack's own."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from devstack.config import StackPaths

DOCKERD_BINARY = "/usr/sbin/dockerd"
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
LOCAL_TCP_HOSTS = ("127.0.0.1", "localhost")
# sun_path in struct sockaddr_un is 108 bytes long, including the trailing NUL.
MAX_UNIX_SOCKET_PATH = 107
# Fallback for a state folder on a filesystem where overlayfs cannot keep its upper layer,
# such as a state folder that is itself on overlayfs: overlay2 needs a data root elsewhere.
FALLBACK_DATA_PARENT = Path("/var/lib/devstack-docker")


@dataclass(frozen=True)
class DockerLayout:
    """Files and folders of the stack's own dockerd."""

    socket: Path
    exec_root: Path
    pidfile: Path  # written by dockerd; the stack's own pidfile is in the run folder
    config_file: Path

    @classmethod
    def of(cls, paths: StackPaths) -> DockerLayout:
        folder = paths.docker
        return cls(
            socket=folder / "docker.sock",
            exec_root=folder / "exec",
            pidfile=folder / "dockerd.pid",
            config_file=folder / "daemon.json",
        )

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"


def check_local_host(docker_host: str) -> None:
    """Reject a DOCKER_HOST that points away from this machine."""
    parsed = urlparse(docker_host)
    if parsed.scheme == "unix":
        return
    if parsed.scheme in ("tcp", "http") and parsed.hostname in LOCAL_TCP_HOSTS:
        return
    raise RuntimeError(
        f"DOCKER_HOST={docker_host} is not a unix socket or a 127.0.0.1 address: "
        "the local stack only uses a local engine, so unset DOCKER_HOST or point it at one"
    )


def ping(docker_host: str, timeout: float = 2.0) -> bool:
    """Return True when the engine at `docker_host` responds to /_ping."""
    import docker
    import requests

    if docker_host.startswith("unix://") and not Path(docker_host[len("unix://") :]).exists():
        return False
    try:
        client = docker.APIClient(base_url=docker_host, version="1.24", timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (
        docker.errors.DockerException,
        requests.exceptions.RequestException,
        OSError,
    ):
        return False


def external_candidate(own_host: str) -> str | None:
    """Return the DOCKER_HOST (or default socket) to try first, unless it is the stack's own."""
    candidate = os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST
    if candidate == own_host:
        return None
    check_local_host(candidate)
    return candidate


def overlay_works(folder: Path) -> bool:
    """Mount a small overlayfs with its upper and work dirs in `folder`, and return whether it worked."""
    probe = folder / ".overlay-probe"
    shutil.rmtree(probe, ignore_errors=True)
    layers = {name: probe / name for name in ("lower", "upper", "work", "merged")}
    for layer in layers.values():
        layer.mkdir(parents=True)
    options = "lowerdir={lower},upperdir={upper},workdir={work}".format(**layers)
    mounted = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", options, str(layers["merged"])],
        capture_output=True,
        check=False,
    )
    if mounted.returncode == 0:
        subprocess.run(["umount", str(layers["merged"])], capture_output=True, check=False)
    shutil.rmtree(probe, ignore_errors=True)
    return mounted.returncode == 0


def choose_data_root(paths: StackPaths) -> Path:
    """Return a data root where overlay2 works: in the state folder if possible."""
    paths.docker.mkdir(parents=True, exist_ok=True)
    if overlay_works(paths.docker):
        return paths.docker / "data"
    suffix = hashlib.sha256(str(paths.root).encode()).hexdigest()[:12]
    fallback = FALLBACK_DATA_PARENT / suffix
    fallback.mkdir(parents=True, exist_ok=True)
    if overlay_works(fallback):
        return fallback / "data"
    raise RuntimeError(
        f"overlayfs mounts fail both in {paths.docker} and in {fallback}: dockerd needs overlay2 "
        "(vfs is about 10 times slower), so set DOCKER_HOST to a running engine instead"
    )


def check_dockerd_can_start(layout: DockerLayout) -> None:
    if os.geteuid() != 0:
        raise RuntimeError(
            "no Docker engine responds at DOCKER_HOST or /var/run/docker.sock, and starting "
            "dockerd needs root: "
            "run as root or set DOCKER_HOST to a running engine"
        )
    if not Path(DOCKERD_BINARY).exists():
        raise RuntimeError(f"{DOCKERD_BINARY} not found: run scripts/install.sh")
    containerd_socket = layout.exec_root / "containerd" / "containerd.sock"
    for socket_path in (layout.socket, containerd_socket):
        if len(str(socket_path)) > MAX_UNIX_SOCKET_PATH:
            raise RuntimeError(
                f"socket path {socket_path} is longer than {MAX_UNIX_SOCKET_PATH} bytes: "
                "set DEVSTACK_STATE_DIR to a shorter folder"
            )


def dockerd_argv(layout: DockerLayout, data_root: Path) -> list[str]:
    """Return the dockerd command line: own socket and folders, no TCP listener, host networking only."""
    return [
        DOCKERD_BINARY,
        f"--host={layout.host}",
        f"--data-root={data_root}",
        f"--exec-root={layout.exec_root}",
        f"--pidfile={layout.pidfile}",
        f"--config-file={layout.config_file}",
        "--storage-driver=overlay2",
        "--iptables=false",
        "--ip6tables=false",
        "--bridge=none",
    ]


def prepare_dockerd(paths: StackPaths) -> list[str]:
    """Create the dockerd folders and config, and return its command line."""
    layout = DockerLayout.of(paths)
    check_dockerd_can_start(layout)
    data_root = choose_data_root(paths)
    data_root.mkdir(parents=True, exist_ok=True)
    layout.exec_root.mkdir(parents=True, exist_ok=True)
    # An empty config keeps /etc/docker/daemon.json of the machine out of the stack's engine.
    layout.config_file.write_text("{}\n")
    # The caller checked that the stack's dockerd is not running, so its pidfile is stale.
    # dockerd would not start if that stale pid now belonged to another live process.
    layout.pidfile.unlink(missing_ok=True)
    return dockerd_argv(layout, data_root)


def dockerd_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DOCKER_HOST", None)
    return env
