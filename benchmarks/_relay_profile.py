"""Where the relay's time goes: py-spy's raw stacks summarised per function (benchmarks/relay.py
--profile)."""

from __future__ import annotations

import re
import shutil
import sys
from collections import Counter
from pathlib import Path


def have_py_spy() -> bool:
    return shutil.which("py-spy") is not None or Path(sys.executable).with_name("py-spy").exists()


def py_spy() -> str:
    found = Path(sys.executable).with_name("py-spy")
    return str(found) if found.exists() else str(shutil.which("py-spy"))


_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^:()]*?)(?::\d+)?\)$")
_PATH_PREFIX = re.compile(r"^.*?/(?:site-packages|src|lib/python3\.\d+)/")
# Leaf frames that are a thread waiting (event loop, idle worker threads), not work.
_IDLE = re.compile(
    r"^(?:\S*\.)?(?:select|_worker|wait|get|acquire|_wait_for_tstate_lock|recv|poll) "
    r"\((?:selectors|concurrent/futures/thread|threading|queue|multiprocessing/\S+)\.py\)$"
)


def _frame(raw: str) -> str:
    match = _FRAME.match(raw.strip())
    if not match:
        return raw.strip()
    return f"{match['fn']} ({_PATH_PREFIX.sub('', match['file'])})"


def summarise_py_spy(raw: Path, top: int = 20) -> str:
    """Busy samples (waiting threads left out) per function: self and inclusive shares."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    busy = idle = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";") if f and not f.startswith("thread ")]
        frames = [f for f in frames if not f.startswith("process ")]
        if not frames or _IDLE.match(frames[-1]):
            idle += count
            continue
        busy += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    if not busy:
        return "py-spy recorded no busy samples"
    lines = [
        f"py-spy, relay process: {busy:,} busy samples ({idle:,} more were threads waiting)",
        "",
        "self (where the CPU goes):",
    ]
    lines += [f"  {100 * c / busy:5.1f}%  {name}" for name, c in own.most_common(top)]
    lines += ["", "inclusive, mailveil functions:"]
    ours = [(n, c) for n, c in inclusive.most_common() if "mailveil/" in n]
    lines += [f"  {100 * c / busy:5.1f}%  {name}" for name, c in ours[:top]]
    return "\n".join(lines)
