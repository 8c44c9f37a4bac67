"""Unit tests of /proc parsing and of which processes count as the stack's own."""

from devstack.processes import ProcessRecord, ProcStat, parse_stat, select_owned


def stat_line(pid: int, comm: str, state: str, ppid: int, session: int, start: int) -> str:
    # Fields 3 to 22 of proc(5); only state, ppid, session and starttime matter here.
    fields = [state, str(ppid), str(pid), str(session)] + ["0"] * 15 + [str(start)]
    return f"{pid} ({comm}) " + " ".join(fields) + " 0 0"


def test_parse_stat_with_odd_command_name() -> None:
    stat = parse_stat(stat_line(42, "a) b (c", "S", 1, 42, 9000))

    assert stat == ProcStat(state="S", ppid=1, session=42, start_ticks=9000)


def record(pid: int = 100, start: int = 500) -> ProcessRecord:
    return ProcessRecord(pid=pid, start_ticks=start, argv=["x"], started_at=0.0)


def test_owned_leader_session_and_descendants() -> None:
    stats = {
        100: ProcStat("S", 1, 100, 500),
        101: ProcStat("S", 100, 100, 510),  # child in the session
        102: ProcStat("S", 100, 102, 520),  # child in its own session (containerd)
        103: ProcStat("S", 102, 102, 530),  # grandchild
        104: ProcStat("S", 1, 102, 540),  # orphan in the child's session (a shim)
        200: ProcStat("S", 1, 200, 100),  # unrelated
        201: ProcStat("S", 200, 200, 600),  # child of the unrelated process
    }

    assert select_owned(stats, record()) == {
        100: 500,
        101: 510,
        102: 520,
        103: 530,
        104: 540,
    }


def test_owned_after_leader_exit() -> None:
    stats = {
        101: ProcStat("S", 1, 100, 510),  # orphan still in the leader's session
        200: ProcStat("S", 1, 200, 100),
    }

    assert select_owned(stats, record()) == {101: 510}


def test_reused_pid_owns_nothing() -> None:
    stats = {
        100: ProcStat("S", 1, 100, 900),  # same pid, later start: another process
        101: ProcStat("S", 100, 100, 910),
    }

    assert select_owned(stats, record()) == {}


def test_zombies_are_not_owned() -> None:
    stats = {
        100: ProcStat("Z", 1, 100, 500),
        101: ProcStat("Z", 100, 100, 510),
    }

    assert select_owned(stats, record()) == {}
