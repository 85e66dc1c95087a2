"""The second half of a big ``verify_ledger`` run, in a second process on the other core.

Python runs one thread at a time, and verification is hashing all the way down, so two cores
need two processes. The worker is ``python -m mailveil.ledger.rangeworker``: it reads one JSON
line of configuration on stdin (how to connect, the key, the range), opens its own read-only
transaction with the plain DBAPI driver (no SQLAlchemy, to start fast), runs
``check.verify_range`` and writes ``P <seq>`` progress lines, then ``R <json outcome>`` (or
``X <message>`` when the database could not be read).

Entries below the head's size never change, so the worker's snapshot, taken a moment after
the parent's, sees the same rows for its range.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from mailveil.ledger.check import RangeOutcome, verify_range
from mailveil.ledger.scan import Reader


class WorkerError(RuntimeError):
    """The worker could not run, or could not read the database."""


class RangeProcess:
    """The parent's handle: start it, poll its progress, collect its outcome."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailveil.ledger.rangeworker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.progress = int(config["lo"])
        self._result: str | None = None
        self._stdout: IO[str] = self.proc.stdout
        self._thread = threading.Thread(target=self._listen, name="ledger-verify-worker")
        self._thread.start()
        self.proc.stdin.write(json.dumps(config) + "\n")
        self.proc.stdin.close()

    def _listen(self) -> None:
        for line in self._stdout:
            if line.startswith("P "):
                self.progress = int(line[2:])
            elif line.startswith(("R ", "X ")):
                self._result = line

    def done(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def outcome(self) -> RangeOutcome:
        self._thread.join()
        code = self.proc.wait()
        line = self._result
        if line is None or code != 0:
            raise WorkerError(f"ledger verification worker failed (exit {code})")
        if line.startswith("X "):
            raise WorkerError(line[2:].strip())
        return RangeOutcome.from_json(json.loads(line[2:]))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._thread.join()
        with contextlib.suppress(OSError):
            self._stdout.close()


def _connect(config: dict[str, Any]) -> Any:
    if config["dialect"] == "sqlite":
        import sqlite3

        lite = sqlite3.connect(config["database"], isolation_level=None)
        lite.execute("PRAGMA busy_timeout=30000")
        lite.execute("BEGIN")  # one snapshot for the whole range
        return lite
    import psycopg

    pg = psycopg.connect(config["database"], options=config.get("options") or "")
    pg.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
    return pg


def _peak_rss_kib() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def main(stdin: IO[str], stdout: IO[str]) -> None:
    config = json.loads(stdin.readline())
    key = tuple(Ed25519PublicKey.from_public_bytes(bytes.fromhex(k)) for k in config["public_keys"])
    try:
        conn = _connect(config)
        try:
            reader = Reader(conn, config["dialect"], int(config["batch"]))

            def progress(pos: int) -> None:
                stdout.write(f"P {pos}\n")
                stdout.flush()

            outcome = verify_range(
                reader, config["origin"], key, int(config["lo"]), int(config["hi"]),
                progress=progress, threaded=False,
            )  # fmt: skip
        finally:
            conn.close()
    except Exception as exc:  # the parent turns this into a problem in its report
        stdout.write(f"X {type(exc).__name__}: {exc}\n".replace("\n", " ").rstrip() + "\n")
        stdout.flush()
        return
    outcome.peak_rss_kib = _peak_rss_kib()
    stdout.write("R " + json.dumps(outcome.to_json()) + "\n")
    stdout.flush()


if __name__ == "__main__":
    main(sys.stdin, sys.stdout)
