"""Start, find and stop the stack's own background processes through pidfiles.

Each process starts as the leader of a new session, and its pidfile stores the pid with the
kernel's start time of that pid. A pid counts as ours only while both match, so a reused pid
is never signalled. Stopping waits for every process left in that session.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcStat:
    """The fields of `/proc/<pid>/stat` that the stack reads."""

    state: str
    ppid: int
    session: int
    start_ticks: int

    @property
    def running(self) -> bool:
        """False for a zombie or dead process, which keeps its pid but no longer runs."""
        return self.state not in ("Z", "X")


@dataclass(frozen=True)
class ProcessRecord:
    """Content of a pidfile."""

    pid: int
    start_ticks: int
    argv: list[str]
    started_at: float


def parse_stat(text: str) -> ProcStat:
    """Parse `/proc/<pid>/stat`, whose command name may contain spaces and parentheses."""
    fields = text[text.rfind(")") + 2 :].split()
    # fields[0] is field 3 of proc(5) ("state"), so field n is at index n - 3.
    return ProcStat(
        state=fields[0],
        ppid=int(fields[1]),
        session=int(fields[3]),
        start_ticks=int(fields[19]),
    )


def read_stat(pid: int) -> ProcStat | None:
    try:
        return parse_stat((PROC / str(pid) / "stat").read_text())
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None


def read_all_stats() -> dict[int, ProcStat]:
    stats: dict[int, ProcStat] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            stat = read_stat(int(entry.name))
            if stat is not None:
                stats[int(entry.name)] = stat
    return stats


def read_record(pidfile: Path) -> ProcessRecord | None:
    try:
        data = json.loads(pidfile.read_text())
        return ProcessRecord(**data)
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return None


def is_alive(record: ProcessRecord) -> bool:
    """Return True while the recorded process runs and its pid was not reused."""
    stat = read_stat(record.pid)
    if stat is None or not stat.running:
        return False
    return stat.start_ticks == record.start_ticks


def running_record(pidfile: Path) -> ProcessRecord | None:
    """Return the record of `pidfile` when its process is alive, else None."""
    record = read_record(pidfile)
    if record is not None and is_alive(record):
        return record
    return None


def start_process(
    argv: Sequence[str],
    pidfile: Path,
    log: Path,
    env: Mapping[str, str],
    cwd: Path,
) -> ProcessRecord:
    """Start `argv` detached in its own session, output appended to `log`, and write `pidfile`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as log_stream:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log_stream.write(f"\n--- devstack start {stamp}: {' '.join(argv)}\n".encode())
        log_stream.flush()
        child = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log_stream,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )
    stat = read_stat(child.pid)
    start_ticks = stat.start_ticks if stat else 0
    record = ProcessRecord(child.pid, start_ticks, list(argv), time.time())
    write_record(pidfile, record)
    return record


def write_record(pidfile: Path, record: ProcessRecord) -> None:
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    partial = pidfile.with_suffix(".tmp")
    partial.write_text(json.dumps(asdict(record)))
    partial.replace(pidfile)


def exit_code(record: ProcessRecord) -> int | None:
    """Return the exit code of a child started by this process, or None if unknown or running."""
    try:
        pid, status = os.waitpid(record.pid, os.WNOHANG)
    except ChildProcessError:
        return None
    if pid == 0:
        return None
    return os.waitstatus_to_exitcode(status)


def select_owned(stats: dict[int, ProcStat], record: ProcessRecord) -> dict[int, int]:
    """Return pid to start time of the live processes that `record`'s process started.

    These are the leader, the descendants of owned processes, and the members of sessions
    that owned processes lead. dockerd, for one, runs containerd in a new session, and
    containerd's shims live in that session with init as their parent. Linux does not hand
    out a pid again while a live process still uses it as its session id. So a session id
    equal to an owned leader's pid is ours, unless the leader's pid now names a newer process.
    """
    leader = stats.get(record.pid)
    if leader is not None and leader.start_ticks != record.start_ticks:
        return {}
    owned: dict[int, int] = {}
    if leader is not None and leader.running:
        owned[record.pid] = leader.start_ticks
    # The leader's own session counts even after the leader exited.
    sessions = {record.pid: record.start_ticks}
    while True:
        found = {
            pid: stat.start_ticks
            for pid, stat in stats.items()
            if pid not in owned and stat.running and _belongs(stat, owned, sessions)
        }
        if not found:
            return owned
        owned.update(found)
        for pid, start_ticks in found.items():
            if stats[pid].session == pid:
                sessions[pid] = start_ticks


def _belongs(stat: ProcStat, owned: dict[int, int], sessions: dict[int, int]) -> bool:
    if stat.ppid in owned:
        return True
    leader_start = sessions.get(stat.session)
    return leader_start is not None and stat.start_ticks >= leader_start


def still_running(owned: dict[int, int]) -> list[int]:
    alive = []
    for pid, start_ticks in owned.items():
        stat = read_stat(pid)
        if stat is not None and stat.running and stat.start_ticks == start_ticks:
            alive.append(pid)
    return alive


def wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll `condition` until it returns True or `timeout` seconds pass, and return the last result."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def stop_process(pidfile: Path, timeout: float) -> bool:
    """Stop the process of `pidfile` and all it started, and return False if none of them ran.

    The leader gets SIGTERM and `timeout` seconds to exit with its children (if the leader is
    gone already, its leftovers get the SIGTERM). Whatever is still alive then gets SIGKILL.
    The pidfile is removed once all of them are gone.
    """
    record = read_record(pidfile)
    if record is None:
        return False
    owned = select_owned(read_all_stats(), record)
    if not owned:
        pidfile.unlink(missing_ok=True)
        return False

    targets = [record.pid] if record.pid in owned else list(owned)
    for pid in targets:
        send_signal(pid, signal.SIGTERM)

    def all_gone() -> bool:
        # Children the leader starts while shutting down count as well.
        owned.update(select_owned(read_all_stats(), record))
        return not still_running(owned)

    if not wait_for(all_gone, timeout):
        for pid in still_running(owned):
            send_signal(pid, signal.SIGKILL)
        if not wait_for(lambda: not still_running(owned), 10.0):
            remaining = ", ".join(str(pid) for pid in still_running(owned))
            raise RuntimeError(f"processes {remaining} of {pidfile.stem} are still alive after SIGKILL")
    pidfile.unlink(missing_ok=True)
    return True


def send_signal(pid: int, signum: signal.Signals) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
