"""Cap glibc's malloc arenas in the relay's process (``relay_malloc_arenas``).

Why: glibc gives threads that allocate at the same time arenas of their own, up to eight per
core, and an arena keeps what it freed for reuse instead of returning it. The relay parses,
prescans and records messages of up to 25 MiB in its worker threads (the group commit, the
reads, the prescan), so each thread's arena grew to the largest messages it had held and
stayed there: over 100,000 mixed messages the relay's RSS rose 207 -> 228 MiB (+10.3 %), and
with two arenas 203 -> 210 MiB (+3.7 %), at the same rate or better
(``benchmarks/relay.py --memory``). The threads mostly wait on SQLite or the socket, so they
seldom contend for an arena. This is ``MALLOC_ARENA_MAX``, set from inside the process so it
holds however the relay was started; threads started before it keep their arenas.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger("mailveil.relay")

_M_ARENA_MAX = -8  # glibc's malloc.h


def cap_malloc_arenas(count: int) -> bool:
    """At most ``count`` malloc arenas from now on (0: leave glibc's default). True when the
    C library took it; False where it is not glibc (nothing to cap)."""
    if count <= 0:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    took = bool(mallopt(_M_ARENA_MAX, count))
    if not took:
        log.info("relay: the C library does not cap malloc arenas")
    return took


__all__ = ["cap_malloc_arenas"]
