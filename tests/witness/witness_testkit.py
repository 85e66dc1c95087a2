"""What the witness tests share: a witness in a directory, an in-memory log that signs real
checkpoints, add-checkpoint bodies, and a witness server in its own process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mailveil.ledger import merkle
from mailveil.ledger.events import Event
from mailveil.ledger.signing import CheckpointSigner
from mailveil.witness.client import submission_body
from mailveil.witness.home import WitnessHome
from mailveil.witness.service import Witness


def events(n: int, start: int = 0) -> list[Event]:
    """Ledger events of several kinds, numbered from ``start``."""
    kinds = ("disclosure", "message", "send", "signal")
    return [
        Event(
            kind=kinds[i % 4], actor=f"principal:{i % 5}", subject=f"customer:{i}", detail={"i": i}
        )
        for i in range(start, start + n)
    ]


def make_witness(directory: Path, name: str = "witness.test/w1") -> Witness:
    home = WitnessHome(directory)
    identity = home.init(name)
    return Witness(identity, home.state())


@dataclass
class MemoryLog:
    """A log kept in memory that signs C2SP checkpoints with a real Ed25519 key."""

    origin: str = "log.test/ledger"
    signer: CheckpointSigner = field(init=False)
    leaves: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.signer = CheckpointSigner.generate(self.origin)

    def grow(self, n: int, tag: str = "entry") -> None:
        start = len(self.leaves)
        self.leaves += [merkle.leaf_hash(f"{tag} {i}".encode()) for i in range(start, start + n)]

    def fork(self, keep: int, grow: int, tag: str = "forged") -> MemoryLog:
        """Same origin and key, history rewritten after the first ``keep`` entries."""
        other = MemoryLog(self.origin)
        other.signer = self.signer
        other.leaves = self.leaves[:keep]
        other.grow(grow, tag)
        return other

    def note(self, size: int | None = None) -> str:
        size = len(self.leaves) if size is None else size
        root = merkle.root(self.leaves[:size])
        return self.signer.sign_checkpoint(self.origin, size, root, 1_700_000_000_000_000)

    def proof(self, old: int, size: int | None = None) -> list[bytes]:
        size = len(self.leaves) if size is None else size
        if old in (0, size):
            return []
        return merkle.consistency_path(old, size, merkle.memory_subtree(self.leaves))

    def body(self, old: int, size: int | None = None) -> bytes:
        return submission_body(old, self.proof(old, size), self.note(size))

    @property
    def vkey(self) -> str:
        return self.signer.verifier_key


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILVEIL_")}
    env.update({"PYTHONUNBUFFERED": "1", "NO_COLOR": "1", "COLUMNS": "200"})
    return env


def mailveil_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailveil", *args],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=120,
        check=False,
    )


@dataclass
class WitnessProcess:
    directory: Path
    process: subprocess.Popen[str]
    url: str

    def stop(self, *, kill: bool = False) -> None:
        if self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            self.process.wait(timeout=20)
        if self.process.stdout is not None:
            self.process.stdout.close()


def start_witness(directory: Path) -> WitnessProcess:
    """`mailveil witness serve` in its own process on a free loopback port."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mailveil",
            "witness",
            "serve",
            "--dir",
            str(directory),
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=child_env(),
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    found = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
    if found is None:
        process.kill()
        raise AssertionError(f"the witness did not start: {line!r}")
    url = found.group(1)
    deadline = time.monotonic() + 30
    while True:  # listening from the start; ready once uvicorn serves
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as answer:  # noqa: S310
                if answer.status == 200:
                    break
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.05)
    return WitnessProcess(directory, process, url)


@contextmanager
def witness_process(directory: Path) -> Iterator[WitnessProcess]:
    running = start_witness(directory)
    try:
        yield running
    finally:
        running.stop()


@contextmanager
def witness_thread(directory: Path, name: str = "witness.test/api") -> Iterator[str]:
    """A witness served by uvicorn in a thread of this process, on a free loopback port
    (for API tests; the refusal tests run it in a process of its own)."""
    import socket
    import threading

    import uvicorn

    from mailveil.witness.server import create_witness_app

    witness = make_witness(directory, name)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    config = uvicorn.Config(create_witness_app(witness), log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise AssertionError("the witness thread did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()
