"""Find and remove mounts that the stack's tools leave below a folder of the state folder."""

from __future__ import annotations

import subprocess
from pathlib import Path

PROC_MOUNTS = Path("/proc/mounts")


def mounts_below(folder: Path, proc_mounts: str) -> list[str]:
    """Return mount points inside `folder`, deepest first, from the text of /proc/mounts."""
    prefix = str(folder).rstrip("/") + "/"
    points = []
    for line in proc_mounts.splitlines():
        fields = line.split()
        if len(fields) > 1:
            # /proc/mounts writes space, tab, newline and backslash as octal escapes.
            point = fields[1].encode().decode("unicode_escape")
            if point.startswith(prefix):
                points.append(point)
    return sorted(points, key=len, reverse=True)


def unmount_below(folder: Path) -> None:
    """Lazily unmount everything mounted inside `folder`, so the folder can be deleted."""
    for mount_point in mounts_below(folder, PROC_MOUNTS.read_text()):
        subprocess.run(["umount", "--lazy", mount_point], capture_output=True, check=False)
