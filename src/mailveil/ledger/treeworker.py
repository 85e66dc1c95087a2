"""The Merkle side of ``verify_ledger`` in a second process, so it runs on the other core.

Leaf hashing and chain checks stay in the verifying process; the tree rebuild (one node hash
per leaf) and the checkpoint signatures are as much work again and, in one process, would
share its GIL. The worker is ``python -m mailveil.ledger.treeworker``: it imports only the
ledger's pure modules, reads length-prefixed binary frames on stdin and writes one JSON
result on stdout (a single ``F`` byte first if it found a problem, so the parent can stop).

Frames, little-endian: ``C`` origin-length(u32) origin public-key(32); then per batch ``B``
lo(u64) count(u32) checkpoints(u32) nodes(u32), the joined leaf hashes, each checkpoint as
tree_size(u64) time_us(u64) note-length(u32) root(32) note, each node as level(u16)
idx(u64) hash(32); finally ``E``.
"""

from __future__ import annotations

import contextlib
import json
import select
import struct
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from mailveil.ledger.tree import TreeChecker, TreeFailure

_BATCH = struct.Struct("<QIII")
_CP = struct.Struct("<QQI")
_NODE = struct.Struct("<HQ")
_LEN = struct.Struct("<I")


@dataclass(frozen=True)
class TreeResult:
    frontier: list[bytes]
    size: int
    last_good_checkpoint: int
    checkpoints: int
    nodes: int
    failure: TreeFailure | None
    failure_batch: int | None  # lo of the batch the failure was found in


class TreeProcess:
    """The parent's handle on a worker."""

    def __init__(self, origin: str, public_key: Ed25519PublicKey) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailveil.ledger.treeworker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in: IO[bytes] = self.proc.stdin
        self._out: IO[bytes] = self.proc.stdout
        encoded = origin.encode()
        self._in.write(b"C" + _LEN.pack(len(encoded)) + encoded + public_key.public_bytes_raw())

    def add(
        self,
        lo: int,
        joined: bytes,
        checkpoints: list[tuple[Any, ...]],
        nodes: list[tuple[Any, ...]],
    ) -> None:
        parts = [b"B", _BATCH.pack(lo, len(joined) // 32, len(checkpoints), len(nodes)), joined]
        for size, root, time_us, note in checkpoints:
            text = str(note).encode()
            parts += [_CP.pack(int(size), int(time_us), len(text)), bytes(root), text]
        for level, idx, digest in nodes:
            parts += [_NODE.pack(int(level), int(idx)), bytes(digest)]
        self._in.write(b"".join(parts))
        self._in.flush()

    def failed(self) -> bool:
        """True once the worker has signalled a problem (never blocks)."""
        readable, _, _ = select.select([self._out], [], [], 0)
        return bool(readable)

    def finish(self) -> TreeResult:
        with contextlib.suppress(BrokenPipeError):
            self._in.write(b"E")
            self._in.close()
        out = self._out.read()
        code = self.proc.wait()
        if out.startswith(b"F"):
            out = out[1:]
        if code != 0 or not out.startswith(b"R"):
            raise RuntimeError(f"ledger tree worker failed (exit {code})")
        data = json.loads(out[1:])
        failure = data["failure"]
        return TreeResult(
            frontier=[bytes.fromhex(h) for h in data["frontier"]],
            size=data["size"],
            last_good_checkpoint=data["last_good_checkpoint"],
            checkpoints=data["checkpoints"],
            nodes=data["nodes"],
            failure=None
            if failure is None
            else TreeFailure(failure["reason"], failure["seq"], failure["checkpoint"]),
            failure_batch=data["failure_batch"],
        )

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self._in, self._out):
            with contextlib.suppress(OSError):
                stream.close()


def _read(stream: IO[bytes], n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise EOFError("tree worker input ended mid-frame")
    return data


def serve(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    if _read(stdin, 1) != b"C":
        raise ValueError("tree worker: expected the configuration frame")
    origin = _read(stdin, _LEN.unpack(_read(stdin, 4))[0]).decode()
    checker = TreeChecker(origin, Ed25519PublicKey.from_public_bytes(_read(stdin, 32)))
    failure: TreeFailure | None = None
    failure_batch: int | None = None
    while (tag := stdin.read(1)) == b"B":
        lo, count, n_cp, n_nodes = _BATCH.unpack(_read(stdin, _BATCH.size))
        joined = _read(stdin, 32 * count)
        checkpoints = []
        for _ in range(n_cp):
            size, time_us, length = _CP.unpack(_read(stdin, _CP.size))
            root = _read(stdin, 32)
            checkpoints.append((size, root, time_us, _read(stdin, length).decode()))
        nodes = []
        for _ in range(n_nodes):
            level, idx = _NODE.unpack(_read(stdin, _NODE.size))
            nodes.append((level, idx, _read(stdin, 32)))
        if failure is not None:
            continue  # keep reading so the parent never blocks on a full pipe
        computed = [joined[i : i + 32] for i in range(0, len(joined), 32)]
        failure = checker.add(lo, computed, checkpoints, nodes)
        if failure is not None:
            failure_batch = lo
            stdout.write(b"F")
            stdout.flush()
    if tag not in (b"E", b""):
        raise ValueError(f"tree worker: unexpected frame {tag!r}")
    result = {
        "frontier": [h.hex() for h in checker.frontier],
        "size": checker.size,
        "last_good_checkpoint": checker.last_good_checkpoint,
        "checkpoints": checker.checkpoints,
        "nodes": checker.nodes,
        "failure": None if failure is None else asdict(failure),
        "failure_batch": failure_batch,
    }
    stdout.write(b"R" + json.dumps(result).encode())
    stdout.flush()


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
