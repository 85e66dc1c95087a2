"""CPU time of processes and their children (Linux /proc), for the benchmarks' CPU budgets:
where each message's CPU goes on a machine whose cores are shared by the client, the server
under test and the sink."""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces.
    return raw[raw.rindex(")") + 2 :].split()


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid``, its live descendants, and the children it has reaped
    (a Postfix smtpd that exited during the run is counted through its master)."""
    tree = _children()
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        fields = _stat(current)
        if fields is None:
            continue
        # utime, stime, cutime, cstime: fields 14-17 of stat, here 11-14 (after "(comm)").
        total += sum(int(v) for v in fields[11:15])
        stack.extend(tree.get(current, []))
    return total / _TICK


def self_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system
