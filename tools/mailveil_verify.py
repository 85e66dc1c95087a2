#!/usr/bin/env python3
"""Check a mailveil evidence bundle or ledger checkpoint, without mailveil.

For a court, the police, a regulator, or anyone handed evidence by a marketplace that runs
mailveil. This one file needs Python 3.9 or later and one Ed25519 library: `cryptography`
or PyNaCl (`pip install cryptography`). It shares no code with mailveil: it re-implements
the published formats (C2SP signed-note, tlog-checkpoint, tlog-cosignature; RFC 9162
Merkle trees), so a fault in mailveil's own checks cannot hide here.

    python3 mailveil_verify.py bundle evidence.json --key LEDGER_KEY \\
        --witness WITNESS_KEY [--witness WITNESS_KEY ...] [--quorum N]
    python3 mailveil_verify.py checkpoint checkpoint.txt --key LEDGER_KEY [--witness ...]

LEDGER_KEY is the marketplace's ledger verifier key, obtained from the marketplace itself
(not from the bundle): `<name>+<8 hex>+<base64>`, or the plain base64 Ed25519 public key.
WITNESS_KEY is a witness's verifier key, obtained from the witness's operator. With
--witness, at least --quorum (default: all) of the named witnesses must have cosigned the
checkpoint: each one attests that, at the time it signed, this was the ledger's history as it
had seen it grow, append-only. Exit status: 0 verified, 1 does not verify, 2 bad usage or
unreadable input.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import struct
import sys
import time
from typing import Any

# -- Ed25519, from whichever maintained library is installed --------------------------------

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    def ed25519_verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True

except ImportError:  # pragma: no cover - exercised by running without `cryptography`
    try:
        from nacl.exceptions import BadSignatureError
        from nacl.signing import VerifyKey
    except ImportError:
        sys.exit("this verifier needs an Ed25519 library: pip install cryptography (or pynacl)")

    def ed25519_verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
        try:
            VerifyKey(public_key).verify(message, signature)
        except (BadSignatureError, ValueError, TypeError):
            return False
        return True


class Invalid(Exception):
    """The input does not verify (or is not what it claims to be)."""


# -- C2SP signed notes (signed-note), checkpoints (tlog-checkpoint), cosignatures ----------

ED25519, COSIGNATURE_V1 = 0x01, 0x04
DASH = "\u2014 "


def b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Invalid(f"not base64: {text[:40]!r}") from None


def name_ok(name: str) -> bool:
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


def key_id(name: str, kind: int, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([kind]) + public_key).digest()[:4]


class Key:
    def __init__(self, name: str, kind: int, public_key: bytes) -> None:
        if not name_ok(name) or len(public_key) != 32:
            raise Invalid(f"not a usable Ed25519 key named {name!r}")
        self.name, self.kind, self.public_key = name, kind, public_key
        self.id = key_id(name, kind, public_key)


def parse_vkey(text: str, kind: int) -> Key:
    """`<name>+<hex key ID>+base64(type || key)`; split at the first two '+' only."""
    name, _, rest = text.strip().partition("+")
    hex_id, _, material = rest.partition("+")
    raw = b64(material)
    if len(raw) != 33 or raw[0] != kind:
        raise Invalid(f"{text[:60]!r} is not an Ed25519 verifier key of type {kind:#04x}")
    key = Key(name, kind, raw[1:])
    if hex_id.lower() != key.id.hex():
        raise Invalid(f"the key ID of {text[:60]!r} does not match its name and key")
    return key


def ledger_key(text: str, origin: str) -> Key:
    """The ledger key in either published form: its vkey, or the plain base64 key (then
    named, as the ledger names it, after the checkpoint's origin)."""
    text = text.strip()
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) == 32:
        return Key(origin, ED25519, raw)
    return parse_vkey(text, ED25519)


def open_note(note: str, keys: list[Key]) -> tuple[str, list[tuple[Key, bytes]]]:
    """(text, [(key, signature bytes)] verified): the rules of Go's sumdb/note Open."""
    if any(c < " " and c != "\n" for c in note):
        raise Invalid("the note holds control characters")
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise Invalid("not a signed note (no blank line before the signatures)")
    text, block = note[: split + 1], note[split + 2 :]
    lines = block[:-1].split("\n")
    if len(lines) > 100:
        raise Invalid("too many signatures")
    known = {(k.name, k.id): k for k in keys}
    verified: list[tuple[Key, bytes]] = []
    seen: set[tuple[str, bytes]] = set()
    for line in lines:
        if not line.startswith(DASH):
            raise Invalid("a malformed signature line")
        name, _, blob_text = line[len(DASH) :].partition(" ")
        blob = b64(blob_text)
        if not name_ok(name) or len(blob) < 5:
            raise Invalid("a malformed signature line")
        key = known.get((name, blob[:4]))
        if key is None or (name, blob[:4]) in seen:
            continue  # someone else's signature, or one counted already
        seen.add((name, blob[:4]))
        sig = blob[4:]
        if key.kind == COSIGNATURE_V1:
            if len(sig) != 72:
                raise Invalid(f"the cosignature by {name} is malformed")
            stamp = struct.unpack(">Q", sig[:8])[0]
            message = b"cosignature/v1\ntime %d\n" % stamp + text.encode()
            sig = sig[8:]
        else:
            message = text.encode()
        if not ed25519_verify(key.public_key, sig, message):
            raise Invalid(f"the signature by {name} does NOT verify")
        verified.append((key, blob[4:]))
    return text, verified


def read_checkpoint(text: str) -> tuple[str, int, bytes]:
    """(origin, size, root) of a checkpoint's note text."""
    lines = text[:-1].split("\n")
    if len(lines) < 3 or not lines[1].isdigit() or (lines[1] != "0" and lines[1][0] == "0"):
        raise Invalid("not a checkpoint (origin, size and root lines)")
    root = b64(lines[2])
    if len(root) != 32:
        raise Invalid("the checkpoint's root is not a SHA-256 hash")
    return lines[0], int(lines[1]), root


class Report:
    def __init__(self) -> None:
        self.ok = True
        self.rows: list[tuple[bool, str, str]] = []

    def check(self, passed: bool, what: str, detail: str = "") -> bool:
        self.rows.append((passed, what, detail))
        self.ok = self.ok and passed
        return passed

    def print(self) -> None:
        for passed, what, detail in self.rows:
            print(f"{'PASS' if passed else 'FAIL'}  {what}" + (f": {detail}" if detail else ""))


def check_checkpoint(
    report: Report, note: str, key_text: str, witnesses: list[str], quorum: int | None
) -> tuple[int, bytes] | None:
    """Check the ledger's signature and the witness quorum; the (size, root) or None."""
    try:
        origin = note.split("\n", 1)[0]
        lkey = ledger_key(key_text, origin)
        wkeys = [parse_vkey(w, COSIGNATURE_V1) for w in witnesses]
        if len({k.name for k in wkeys}) != len(wkeys):
            raise Invalid("two witness keys have the same name")
        text, verified = open_note(note, [lkey, *wkeys])
        _origin, size, root = read_checkpoint(text)
    except Invalid as exc:
        report.check(False, "checkpoint", str(exc))
        return None
    if not report.check(
        any(k is lkey for k, _ in verified), "checkpoint signed by the ledger key", lkey.name
    ):
        return None
    report.check(True, "checkpoint", f"{origin}, {size} entries, root {root.hex()[:16]}...")
    if wkeys:
        need = len(wkeys) if quorum is None else quorum
        late = time.time() + 3600
        names: list[str] = []
        for k, sig in verified:
            if k.kind == COSIGNATURE_V1:
                stamp = struct.unpack(">Q", sig[:8])[0]
                when = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(min(stamp, 2**33)))
                if report.check(0 < stamp <= late, f"cosigned by witness {k.name}", when):
                    names.append(k.name)
        report.check(len(names) >= need, "witness quorum", f"{len(names)} of {need} required")
    else:
        print("note: no --witness given, so no witness cosignature was checked", file=sys.stderr)
    return size, root


# -- RFC 9162 Merkle inclusion proofs ---------------------------------------------------------


def node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def inclusion_root(index: int, size: int, leaf_hash: bytes, proof: list[bytes]) -> bytes:
    """RFC 9162 section 2.1.3.2: the root an inclusion proof leads to."""
    if not 0 <= index < size:
        raise Invalid("leaf index outside the tree")
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            raise Invalid("inclusion proof too long")
        if fn & 1 or fn == sn:
            r = node(p, r)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise Invalid("inclusion proof too short")
    return r


# -- evidence bundles (format mailveil-evidence/1) -------------------------------------------


def check_bundle(
    report: Report, bundle: dict[str, Any], key_text: str, witnesses: list[str], quorum: int | None
) -> None:
    if bundle.get("format") != "mailveil-evidence/1":
        report.check(False, "format", "not a mailveil-evidence/1 bundle")
        return
    cp = bundle["checkpoint"]
    tree = check_checkpoint(
        report, cp.get("cosigned_note") or cp["note"], key_text, witnesses, quorum
    )
    if tree is None:
        return
    size, root = tree
    leaves: dict[int, Any] = {}
    for entry in bundle["entries"]:
        seq, leaf = int(entry["seq"]), str(entry["leaf"])
        try:
            proof = [bytes.fromhex(h) for h in entry["proof"]]
            leaf_hash = hashlib.sha256(b"\x00" + leaf.encode("utf-8")).digest()
            in_tree = inclusion_root(seq, size, leaf_hash, proof) == root
            content = json.loads(leaf)
        except (Invalid, ValueError) as exc:
            report.check(False, f"ledger entry {seq} is in the signed ledger", str(exc))
            continue
        if report.check(
            in_tree and content.get("seq") == seq,
            f"ledger entry {seq} is in the signed ledger",
            content.get("kind", ""),
        ):
            leaves[seq] = content
    for claim in bundle["claims"]:
        check_claim(report, claim, leaves)


def check_claim(report: Report, claim: dict[str, Any], leaves: dict[int, Any]) -> None:
    """Does each claim say what its ledger entries say?"""
    label = f"signal {claim.get('signal')}"
    missing = [s for s in claim.get("entries", []) if s not in leaves]
    if missing:
        report.check(False, f"{label}: its entries are present", f"missing {missing}")
        return
    seq = claim.get("evidence_entry")
    evidence = leaves.get(seq) if isinstance(seq, int) else None
    if evidence is None:
        report.check(False, f"{label}: a ledger entry backs it", "none in the bundle")
        return
    report.check(True, f"{label}: a ledger entry backs it")
    alias, source = claim.get("alias"), claim.get("source")
    if alias:
        disclosed = [
            leaf["seq"]
            for leaf in leaves.values()
            if leaf.get("kind") == "disclosure"
            and leaf.get("alias") == alias
            and (leaf.get("detail") or {}).get("principal") == source
        ]
        report.check(
            bool(disclosed),
            f"{label}: the alias was disclosed to {source}",
            f"ledger entry {disclosed[0]}" if disclosed else "no such disclosure",
        )
        report.check(
            evidence.get("alias") == alias,
            f"{label}: the evidence entry concerns that alias",
            f"ledger entry {evidence.get('seq')} ({evidence.get('kind')})",
        )
    else:
        report.check(
            evidence.get("subject") == claim.get("customer"),
            f"{label}: the evidence entry concerns {claim.get('customer')}",
        )


# -- command line ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["bundle", "checkpoint"])
    parser.add_argument("file", help="the evidence bundle (JSON) or the checkpoint note")
    parser.add_argument("--key", required=True, help="the ledger's verifier key (or base64 key)")
    parser.add_argument("--witness", action="append", default=[], help="a witness's vkey")
    parser.add_argument("--quorum", type=int, help="cosignatures needed (default: all)")
    args = parser.parse_args(argv)
    if args.quorum is not None and not 1 <= args.quorum <= len(args.witness):
        parser.error("--quorum must be between 1 and the number of --witness keys")
    try:
        with open(args.file, encoding="utf-8", newline="") as handle:
            data = handle.read()
        bundle = json.loads(data) if args.what == "bundle" else None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        print(f"error: {args.file}: {exc}", file=sys.stderr)
        return 2
    report = Report()
    try:
        if bundle is not None:
            check_bundle(report, bundle, args.key, args.witness, args.quorum)
        else:
            check_checkpoint(report, data, args.key, args.witness, args.quorum)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        report.check(False, "structure", f"malformed input: {exc!r}")
    report.print()
    print("VERIFIED" if report.ok else "DOES NOT VERIFY")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
