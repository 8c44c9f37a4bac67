"""Find out whether a TCP port is free on 127.0.0.1 and, if not, which process listens on it."""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass
from pathlib import Path

from devstack.config import LOOPBACK

PROC = Path("/proc")
TCP_LISTEN = "0A"


@dataclass(frozen=True)
class PortOwner:
    pid: int
    command: str


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """Return True when a listener could bind `host:port` now.

    SO_REUSEADDR makes sockets in TIME_WAIT not count; a listener on 0.0.0.0 or [::] still does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def listening_inodes(proc_net_tcp: str, port: int) -> set[str]:
    """Return the socket inodes listening on `port` in the text of `/proc/net/tcp` or `tcp6`."""
    inodes: set[str] = set()
    for line in proc_net_tcp.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        if local_port == port and fields[3] == TCP_LISTEN:
            inodes.add(fields[9])
    return inodes


def find_port_owner(port: int) -> PortOwner | None:
    """Return the process listening on `port`, or None when it cannot be determined."""
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            inodes |= listening_inodes((PROC / "net" / table).read_text(), port)
        except OSError:
            continue
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and _holds_socket(entry, targets):
            return PortOwner(int(entry.name), _short_command(entry))
    return None


def _holds_socket(proc_dir: Path, targets: set[str]) -> bool:
    try:
        for fd in (proc_dir / "fd").iterdir():
            try:
                if str(fd.readlink()) in targets:
                    return True
            except OSError:
                continue
    except OSError:
        return False
    return False


def _short_command(proc_dir: Path) -> str:
    """Return the program and its first two arguments, because later ones may carry secrets."""
    try:
        argv = (proc_dir / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [word.decode(errors="replace") for word in argv if word]
    return format_command(words)


def format_command(argv: list[str]) -> str:
    if not argv:
        return "?"
    visible = [Path(argv[0]).name, *argv[1:3]]
    suffix = " ..." if len(argv) > 3 else ""
    return " ".join(visible) + suffix


def port_in_use_message(port: int, part: str, owner: PortOwner | None) -> str:
    """Explain which port blocks which part, and what to do about it."""
    by = f" (by pid {owner.pid} {owner.command})" if owner else ""
    return (
        f"port {port} is already in use{by}, so the {part} cannot start: stop that process or "
        f"free port {port}, then run `python -m devstack up` again"
    )
