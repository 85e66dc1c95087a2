"""Process memory readings for the benchmarks (Linux /proc)."""

from __future__ import annotations

from pathlib import Path


def rss_mib(field: str = "VmRSS") -> float:
    """This process's resident set (or ``VmHWM``, its peak) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> bool:
    """Reset VmHWM so the next peak is this phase's own (False where the kernel refuses)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False
