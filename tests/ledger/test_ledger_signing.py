"""The checkpoint key and the C2SP signed-note checkpoints."""

from __future__ import annotations

import base64
import hashlib
import stat

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from mailveil.config import Settings
from mailveil.keyfiles import KeyFileError
from mailveil.ledger.signing import (
    CheckpointError,
    CheckpointSigner,
    init_signing_key,
    key_path,
    load_public_key,
    parse_verifier_key,
    pub_path,
    verify_checkpoint,
)

ROOT = hashlib.sha256(b"root").digest()


def test_key_is_created_once_with_mode_0600(settings: Settings) -> None:
    vkey = init_signing_key(settings)
    seed = key_path(settings).read_bytes()
    assert stat.S_IMODE(key_path(settings).stat().st_mode) == 0o600
    assert init_signing_key(settings) == vkey and key_path(settings).read_bytes() == seed
    signer = CheckpointSigner.load(settings)
    assert signer.verifier_key == vkey and signer.key_name == settings.origin
    assert pub_path(settings).read_text().strip() == vkey
    loaded = load_public_key(settings)
    assert loaded.public_bytes_raw() == signer.public_key_bytes()
    assert base64.b64decode(signer.public_key_b64()) == signer.public_key_bytes()


def test_missing_or_exposed_key_is_refused(settings: Settings) -> None:
    with pytest.raises(KeyFileError):
        CheckpointSigner.load(settings)
    init_signing_key(settings)
    key_path(settings).chmod(0o644)
    with pytest.raises(KeyFileError):
        CheckpointSigner.load(settings)


def test_checkpoint_note_format(settings: Settings) -> None:
    signer = CheckpointSigner.generate("log.example/ledger")
    note = signer.sign_checkpoint("log.example/ledger", 12, ROOT, 1_700_000_000_123_456)
    body, sig = note.split("\n\n")
    assert body.split("\n") == [
        "log.example/ledger",
        "12",
        base64.b64encode(ROOT).decode(),
        "time 2023-11-14T22:13:20.123456Z",
    ]
    assert sig.startswith("\u2014 log.example/ledger ") and sig.endswith("\n")
    blob = base64.b64decode(sig.split(" ")[-1])
    name, key = parse_verifier_key(signer.verifier_key)
    assert name == "log.example/ledger" and len(blob) == 68
    # The key hash is SHA-256(name || "\n" || 0x01 || key)[:4], as C2SP signed-note says.
    raw = key.public_bytes_raw()
    assert blob[:4] == hashlib.sha256(name.encode() + b"\n\x01" + raw).digest()[:4]
    Ed25519PublicKey.from_public_bytes(raw).verify(blob[4:], (body + "\n").encode())
    parsed = verify_checkpoint(note, signer.public_key)
    assert (parsed.tree_size, parsed.root, parsed.time_us) == (12, ROOT, 1_700_000_000_123_456)


@pytest.mark.parametrize(
    "change",
    [
        lambda n: n.replace("\n12\n", "\n13\n"),
        lambda n: n.replace("log.example", "evil.example", 1),
        lambda n: n.replace("time 2023", "time 2024"),
        lambda n: n.split("\n\n")[0] + "\n",
        lambda n: n[:-10] + "AAAAAAAAA\n",
        lambda n: n.replace(base64.b64encode(ROOT).decode(), base64.b64encode(bytes(32)).decode()),
    ],
)
def test_changed_checkpoints_are_rejected(change: object) -> None:
    signer = CheckpointSigner.generate("log.example/ledger")
    note = signer.sign_checkpoint("log.example/ledger", 12, ROOT, 1_700_000_000_123_456)
    assert callable(change)
    with pytest.raises(CheckpointError):
        verify_checkpoint(change(note), signer.public_key)


def test_other_keys_do_not_verify() -> None:
    signer = CheckpointSigner.generate("log.example/ledger")
    other = CheckpointSigner.generate("log.example/ledger")
    note = signer.sign_checkpoint("log.example/ledger", 1, ROOT, 0)
    with pytest.raises(CheckpointError):
        verify_checkpoint(note, other.public_key)
    with pytest.raises(CheckpointError):
        verify_checkpoint(note, other.verifier_key)
    with pytest.raises(CheckpointError):
        parse_verifier_key("name+00000000+AQ==")
    with pytest.raises(ValueError):
        CheckpointSigner.generate("has space")
