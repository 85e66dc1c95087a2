"""The leaf: one ledger entry as the exact bytes that are hashed, stored as they are.

A leaf is compact ASCII JSON with a fixed key order, the previous entry's hash first::

    {"prev":"<64 hex>","seq":7,"time_us":1700000000000000,"kind":"disclosure",
     "actor":"principal:3","subject":"customer:9","alias":"k3...@relay","purpose":"order",
     "ref":"order:12","detail":{...}}

(on one line). JSON makes the encoding unambiguous (strings are quoted and escaped, null is
not ""), readable by auditors in any language, and parseable by the database: the query
columns of ``ledger_entries`` (alias, subject, time ...) are generated from the stored leaf,
so they cannot disagree with what was hashed. Verification hashes the stored text directly.

The leaf hash SHA-256(0x00 || leaf) is both the chain link (the next leaf's ``prev``) and
the RFC 9162 Merkle leaf hash, so each entry is hashed once. ``prev`` of entry 0 is 64 zeros.
"""

from __future__ import annotations

import json
from typing import Any

GENESIS_PREV = bytes(32)
PREFIX = '{"prev":"'  # every leaf starts so; prev's hex digits follow at a fixed offset
PREV_START = len(PREFIX)  # 0-based offset of prev's first hex digit in the leaf
PREV_END = PREV_START + 64

_quote = json.encoder.encode_basestring_ascii  # the C encoder json.dumps uses for strings
_detail = json.JSONEncoder(
    ensure_ascii=True, sort_keys=True, separators=(",", ":"), allow_nan=False
).encode


def _dumps(value: str | None) -> str:
    return "null" if value is None else _quote(value)


def canonical_detail(detail: dict[str, Any]) -> str:
    """The detail object as compact ASCII JSON with sorted keys (raises ValueError/TypeError)."""
    return _detail(detail)


def leaf_text(
    seq: int,
    time_us: int,
    prev_hash: bytes,
    kind: str,
    actor: str | None,
    subject: str | None,
    alias: str | None,
    purpose: str | None,
    ref: str | None,
    detail_json: str,
) -> str:
    """The leaf for these fields; ``detail_json`` is ``canonical_detail(detail)``."""
    return (
        f'{PREFIX}{prev_hash.hex()}","seq":{seq:d},"time_us":{time_us:d},'
        f'"kind":{_dumps(kind)},"actor":{_dumps(actor)},"subject":{_dumps(subject)},'
        f'"alias":{_dumps(alias)},"purpose":{_dumps(purpose)},"ref":{_dumps(ref)},'
        f'"detail":{detail_json}}}'
    )


def parse_leaf(text: str) -> dict[str, Any]:
    """The fields of a leaf (for display and auditing; verification never needs this)."""
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("a leaf is a JSON object")
    return value


__all__ = [
    "GENESIS_PREV",
    "PREFIX",
    "PREV_END",
    "PREV_START",
    "canonical_detail",
    "leaf_text",
    "parse_leaf",
]
