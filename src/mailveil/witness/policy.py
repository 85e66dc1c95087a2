"""Which witnesses count, and checking a checkpoint against the log key and a quorum of them.

A checkpoint is *witnessed* when the ledger's own signature verifies and at least ``quorum``
distinct named witnesses' cosignature/v1 signatures verify on it. A cosignature says "as of my
timestamp, this is the largest tree of this log I have seen, and I checked it grew
append-only": with a quorum of independent witnesses, the operator cannot show one history to
a court and another to the witnesses.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from mailveil.ledger.notes import (
    ALG_COSIGNATURE_V1,
    CheckpointText,
    NoteError,
    VerifierKey,
    log_key,
    open_note,
    origin_of,
    parse_checkpoint_text,
    parse_note,
    parse_vkey,
)

# Cosignatures dated further ahead than this are refused (tlog-cosignature: MAY reject).
MAX_CLOCK_SKEW_SECONDS = 3600


@dataclass(frozen=True)
class WitnessConfig:
    """One witness the ledger publishes to: its verifier key and submission URL prefix."""

    vkey: VerifierKey
    url: str

    @property
    def name(self) -> str:
        return self.vkey.name


def parse_witnesses(text: str) -> list[WitnessConfig]:
    """The ``witnesses`` setting: one ``<cosignature vkey> <URL prefix>`` per line or ';'."""
    out: list[WitnessConfig] = []
    entries = [e.strip() for e in text.replace(";", "\n").split("\n")]
    for number, entry in enumerate((e for e in entries if e), start=1):
        parts = entry.split()
        if len(parts) != 2:
            raise ValueError(f"witness {number}: write '<verifier key> <URL>'")
        try:
            vkey = parse_vkey(parts[0], algs=(ALG_COSIGNATURE_V1,))
        except NoteError as exc:
            raise ValueError(f"witness {number}: {exc}") from exc
        url = parts[1]
        split = urlsplit(url)
        if split.scheme not in ("http", "https") or not split.hostname:
            raise ValueError(f"witness {number}: the URL must be http(s)://host[:port][/prefix]")
        if split.query or split.fragment:
            raise ValueError(f"witness {number}: the URL prefix has no query or fragment")
        out.append(WitnessConfig(vkey, url.rstrip("/")))
    names = [w.name for w in out]
    if len(set(names)) != len(names):
        raise ValueError("two witnesses have the same name")
    return out


@dataclass(frozen=True)
class Cosigner:
    name: str
    timestamp: int
    line: str


@dataclass
class CheckpointCheck:
    """The outcome of checking one checkpoint, step by step, in words for a report."""

    ok: bool = False  # signed by the ledger key and cosigned by the quorum
    signed: bool = False  # the ledger's own signature verifies
    checkpoint: CheckpointText | None = None
    log_key: VerifierKey | None = None
    cosigners: list[Cosigner] = field(default_factory=list)
    quorum: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_checkpoint(
    note: str,
    key: str | VerifierKey,
    witnesses: Sequence[str | VerifierKey] = (),
    quorum: int | None = None,
    *,
    now: float | None = None,
) -> CheckpointCheck:
    """Check a (co)signed checkpoint: the ledger's signature by ``key`` (a vkey, or the plain
    base64 key named by the origin) and, when ``witnesses`` are named, cosignatures by at
    least ``quorum`` of them (default: all named). Never raises for bad input."""
    result = CheckpointCheck()
    try:
        parsed = parse_note(note)
        result.checkpoint = parse_checkpoint_text(parsed.text)
        lkey = key if isinstance(key, VerifierKey) else log_key(key, origin_of(parsed.text))
        result.log_key = lkey
        wkeys = [
            w if isinstance(w, VerifierKey) else parse_vkey(w, algs=(ALG_COSIGNATURE_V1,))
            for w in witnesses
        ]
        if len({w.name for w in wkeys}) != len(wkeys):
            raise NoteError("two witness keys have the same name")
    except NoteError as exc:
        result.problems.append(str(exc))
        return result
    result.quorum = len(wkeys) if quorum is None else quorum
    try:
        opened = open_note(parsed, [lkey, *wkeys], require_one=False)
    except NoteError as exc:  # a known key's signature that fails spoils the whole note
        result.problems.append(str(exc))
        return result
    if opened.by(lkey) is None:
        result.problems.append(f"no valid signature by the ledger key {lkey.name}")
        return result
    result.signed = True
    limit = (time.time() if now is None else now) + MAX_CLOCK_SKEW_SECONDS
    for verified in opened.verified:
        if verified.key.alg != ALG_COSIGNATURE_V1:
            continue
        ts = verified.timestamp or 0
        if ts <= 0 or ts > limit:
            result.problems.append(f"the cosignature by {verified.key.name} has a bad timestamp")
            continue
        result.cosigners.append(Cosigner(verified.key.name, ts, verified.signature.line))
    if opened.unverified:
        result.notes.append(
            f"{len(opened.unverified)} signature(s) by keys not named here were not checked"
        )
    if result.quorum > len(wkeys):
        result.problems.append(
            f"a quorum of {result.quorum} needs at least {result.quorum} named witnesses"
        )
    elif len(result.cosigners) < result.quorum:
        result.problems.append(
            f"cosigned by {len(result.cosigners)} of the {len(wkeys)} named witnesses; "
            f"{result.quorum} required"
        )
    result.ok = not result.problems
    return result


Row = tuple[str, bool, str]


def check_bundle_checkpoint(
    section: Mapping[str, Any],
    pinned_key: str | None,
    witnesses: Sequence[str],
    quorum: int | None,
) -> tuple[list[Row], CheckpointText | None, list[str]]:
    """The checkpoint part of an evidence bundle: (check rows, the checkpoint if its
    signature verifies, warnings). ``pinned_key`` is the ledger key in either published form;
    without it the bundle's own key is used, which proves integrity but not origin."""
    rows: list[Row] = []
    warnings: list[str] = []
    note = str(section.get("cosigned_note") or section["note"])
    bundle_key = str(section["verifier_key"])
    key: str | VerifierKey = bundle_key
    if pinned_key:
        try:
            key = log_key(pinned_key, origin_of(note))
        except NoteError as exc:
            rows.append(("verifier key", False, str(exc)))
            return rows, None, warnings
        if key.vkey != bundle_key:
            rows.append(
                ("verifier key", False, "the bundle names a different key than the pinned one")
            )
    else:
        warnings.append("verified against the bundle's own key: pin the operator's key with --key")
    check = check_checkpoint(note, key, witnesses, quorum)
    if not check.signed or check.checkpoint is None:
        rows.append(("checkpoint signature", False, "; ".join(check.problems)))
        return rows, None, warnings
    rows.append(("checkpoint signature", True, f"tree size {check.checkpoint.size}"))
    if witnesses:
        names = ", ".join(c.name for c in check.cosigners)
        rows.append(
            (
                f"witness cosignatures ({check.quorum} of {len(witnesses)} named required)",
                check.ok,
                "; ".join(check.problems) or f"cosigned by {names}",
            )
        )
    elif check.notes:  # signatures by keys not named: the witnesses' cosignatures
        warnings.append(
            "the checkpoint carries witness cosignatures that were not checked: name the "
            "witnesses you trust with --witness (and --quorum)"
        )
    return rows, check.checkpoint, warnings


__all__ = [
    "CheckpointCheck",
    "Cosigner",
    "WitnessConfig",
    "check_bundle_checkpoint",
    "check_checkpoint",
    "parse_witnesses",
]
