"""relay.arenas: the relay's process caps glibc's malloc arenas (relay_malloc_arenas), so idle
worker threads do not each keep the memory of the largest message they held. Counted with
glibc's own malloc_info in a fresh interpreter whose eight threads allocate at once."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mailveil.config import Settings, SettingsError
from mailveil.config.checks import check_settings
from mailveil.relay.arenas import cap_malloc_arenas

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)

_ARENAS = textwrap.dedent(
    """
    import ctypes, sys, threading
    from mailveil.relay.arenas import cap_malloc_arenas

    took = cap_malloc_arenas(int(sys.argv[1]))
    start = threading.Barrier(8)
    done = threading.Barrier(8)

    def work():
        start.wait()  # all eight allocate at once, as the relay's threads do under load
        held = [bytearray(4096) for _ in range(500)]  # glibc's malloc, not Python's
        done.wait()  # and hold it until all have: each lives while the others allocate
        del held

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    libc = ctypes.CDLL(None)
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    stream = libc.fopen(sys.argv[2].encode(), b"w")
    libc.malloc_info(0, stream)
    libc.fclose(stream)
    print(took)
    """
)


def _arenas(cap: int, tmp_path: Path) -> tuple[bool, int]:
    report = tmp_path / f"malloc-{cap}.xml"
    done = subprocess.run(
        [sys.executable, "-c", _ARENAS, str(cap), str(report)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return done.stdout.strip() == "True", report.read_text().count("<heap nr=")


def test_the_cap_bounds_the_arenas_threads_get(tmp_path: Path) -> None:
    took, capped = _arenas(2, tmp_path)
    assert took and capped <= 2
    left, default = _arenas(0, tmp_path)  # 0: glibc's default, eight per core
    assert not left and default > 2, default


def test_zero_leaves_the_default_and_a_negative_cap_is_refused(tmp_path: Path) -> None:
    assert cap_malloc_arenas(0) is False
    with pytest.raises(SettingsError, match="relay_malloc_arenas"):
        check_settings(Settings(data_dir=tmp_path, relay_malloc_arenas=-1))
