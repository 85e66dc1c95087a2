"""Witness cosignatures of a checkpoint, as the console shows them.

The seam for the witness work: today a checkpoint's signed note carries mailveil's own
signature, and any further signature lines (C2SP tlog-cosignature: a witness's name and
key hash) are listed here as found, unverified. When witnesses and their keys are stored,
``cosignatures`` verifies each against its witness's key and reports it as verified.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

SIG_PREFIX = "\u2014 "  # an em dash and a space start every signature line


@dataclass(frozen=True)
class Cosignature:
    name: str
    key_hash: str  # hex of the 4-byte key id
    verified: bool | None  # None: no key known here to check it with


def cosignatures(note: str, own_name: str) -> list[Cosignature]:
    """Signature lines on the note other than the log's own."""
    _body, _sep, block = note.rpartition("\n\n")
    out = []
    for line in block.splitlines():
        if not line.startswith(SIG_PREFIX):
            continue
        name, _space, blob_text = line[len(SIG_PREFIX) :].rpartition(" ")
        if name == own_name:
            continue
        try:
            blob = base64.b64decode(blob_text, validate=True)
        except binascii.Error:
            continue
        out.append(Cosignature(name, blob[:4].hex(), None))
    return out


__all__ = ["Cosignature", "cosignatures"]
