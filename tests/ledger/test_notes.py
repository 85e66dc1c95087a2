"""Signed notes, verifier keys and cosignatures against published vectors: the C2SP
signed-note example, transparency-dev's witness test checkpoints, and a cosigned checkpoint
made by Go's golang.org/x/mod/sumdb/note with a cosignature/v1 signer (byte-identical to
what mailveil makes from the same keys and time)."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from note_vectors import (
    GO_COSIGNED,
    M_INIT,
    M_NEXT,
    MONKEYS_SKEY,
    MONKEYS_VKEY,
    SPEC_NOTE,
    SPEC_VKEY,
    WITNESS_COSIG_VKEY,
    WITNESS_SKEY,
)

from mailveil.ledger import notes
from mailveil.ledger.notes import (
    ALG_COSIGNATURE_V1,
    ALG_ED25519,
    NoteError,
    cosign,
    log_key,
    open_note,
    parse_checkpoint_text,
    parse_note,
    parse_vkey,
)
from mailveil.ledger.signing import CheckpointSigner


def private(skey: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(base64.b64decode(skey.split("+", 4)[4])[1:])


def test_the_signed_note_spec_example_verifies() -> None:
    key = parse_vkey(SPEC_VKEY)
    assert key.alg == ALG_ED25519 and key.vkey == SPEC_VKEY
    opened = open_note(SPEC_NOTE, [key])
    assert opened.text == "This is an example message.\n"
    assert [v.key.name for v in opened.verified] == ["example.com/foo"]


def test_transparency_dev_checkpoints_verify_and_we_sign_them_identically() -> None:
    key = parse_vkey(MONKEYS_VKEY)
    for note in (M_INIT, M_NEXT):
        opened = open_note(note, [key])
        checkpoint = parse_checkpoint_text(opened.text)
        assert checkpoint.origin == "monkeys"
        # Ed25519 is deterministic: the ledger's own signer writes Go's note, byte for byte.
        assert CheckpointSigner("monkeys", private(MONKEYS_SKEY)).sign_note(opened.text) == note


def test_a_go_cosignature_verifies_and_ours_is_byte_identical() -> None:
    witness = private(WITNESS_SKEY)
    wkey = notes.verifier_key("witness", witness.public_key(), ALG_COSIGNATURE_V1)
    assert wkey.vkey == WITNESS_COSIG_VKEY
    opened = open_note(GO_COSIGNED, [parse_vkey(MONKEYS_VKEY), wkey])
    assert [(v.key.name, v.timestamp) for v in opened.verified] == [
        ("monkeys", None),
        ("witness", 1700000000),
    ]
    text = parse_note(M_NEXT).text
    assert M_NEXT + cosign(witness, "witness", text, 1700000000).line == GO_COSIGNED


def test_a_cosignature_is_bound_to_its_time_and_its_checkpoint() -> None:
    wkey = parse_vkey(WITNESS_COSIG_VKEY)
    line = GO_COSIGNED.splitlines()[-1]
    blob = bytearray(base64.b64decode(line.split()[-1]))
    blob[11] ^= 1  # the timestamp's last byte
    forged = M_NEXT + f"\u2014 witness {base64.b64encode(bytes(blob)).decode()}\n"
    with pytest.raises(NoteError, match="does not verify"):
        open_note(forged, [wkey])
    other_checkpoint = M_INIT + line + "\n"
    with pytest.raises(NoteError, match="does not verify"):
        open_note(other_checkpoint, [wkey])
    # A cosignature is not a plain note signature: the type-0x01 key of the same name and
    # public key has another key ID, so the line is simply not its signature.
    plain = notes.VerifierKey("witness", ALG_ED25519, wkey.public_key)
    with pytest.raises(NoteError, match="no signature by a known key"):
        open_note(GO_COSIGNED, [plain])


@pytest.mark.parametrize(
    ("note", "why"),
    [
        ("text\n\u2014 k AAAAAAA=\n", "no blank line"),
        ("text\n\n\u2014 k AAAAAAA=", "ends with a newline"),
        ("te\x07xt\n\n\u2014 k AAAAAAA=\n", "control character"),
        ("text\n\n- k AAAAAAA=\n", "em dash"),
        ("text\n\n\u2014 k+x AAAAAAA=\n", "malformed"),
        ("text\n\n\u2014 k AAAA\n", "shorter than its key ID"),
        ("text\n\n\u2014 k !!!!\n", "not base64"),
        ("text\n\n" + "\u2014 k AAAAAAA=\n" * 101, "more than 100"),
    ],
)
def test_malformed_notes_are_refused(note: str, why: str) -> None:
    with pytest.raises(NoteError, match=why):
        parse_note(note)


def test_unknown_signatures_are_ignored_and_a_bad_known_one_spoils_the_note() -> None:
    key = parse_vkey(MONKEYS_VKEY)
    stranger = "\u2014 someone AAAAAAAAAAAA\n"
    opened = open_note(M_NEXT + stranger + stranger, [key])
    assert len(opened.verified) == 1 and len(opened.unverified) == 1  # duplicates dropped
    bad = M_NEXT.replace("202ffoUE", "202ffoUF")
    with pytest.raises(NoteError, match="does not verify"):
        open_note(bad, [key])
    with pytest.raises(NoteError, match="no signature by a known key"):
        open_note(M_NEXT, [parse_vkey(SPEC_VKEY)])


def test_vkeys_split_at_the_first_two_plus_signs_and_check_their_key_id() -> None:
    key = parse_vkey(MONKEYS_VKEY)
    raw = base64.b64decode(MONKEYS_VKEY.split("+", 2)[2])
    # A key whose base64 holds '+': the split must not cut it.
    for seed in range(256):
        candidate = notes.verifier_key(
            "log.example/x", Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32).public_key()
        )
        if "+" in candidate.vkey.split("+", 2)[2]:
            assert parse_vkey(candidate.vkey) == candidate
            break
    else:
        pytest.fail("no key with '+' in its base64 among 256 seeds")
    assert raw[0] == ALG_ED25519 and key.public_key == raw[1:]
    with pytest.raises(NoteError, match="key ID does not match"):
        parse_vkey(MONKEYS_VKEY.replace("db4d9f7e", "db4d9f7f"))
    with pytest.raises(NoteError, match="signature type"):
        parse_vkey(MONKEYS_VKEY, algs=(ALG_COSIGNATURE_V1,))
    with pytest.raises(NoteError, match="name"):
        parse_vkey("bad name+db4d9f7e+AULaJMvTtDLHPUcUrjdDad9vDlh/PTfC2VV60JUtCfWT")


def test_the_ledger_key_is_accepted_in_both_published_forms() -> None:
    vkey = parse_vkey(MONKEYS_VKEY)
    assert log_key(MONKEYS_VKEY) == vkey
    assert log_key(vkey.public_key_b64, "monkeys") == vkey
    with pytest.raises(NoteError, match="needs the key name"):
        log_key(vkey.public_key_b64)
    with pytest.raises(NoteError, match="mailveil ledger key"):
        log_key("not a key")
    with pytest.raises(NoteError, match="signature type"):
        log_key(WITNESS_COSIG_VKEY)  # a witness's key is not a ledger key


def test_checkpoint_text_rules() -> None:
    assert parse_checkpoint_text(parse_note(M_INIT).text).size == 5
    root = base64.b64encode(bytes(32)).decode()
    for text, why in [
        (f"o\n05\n{root}\n", "leading zero"),
        (f"o\n-1\n{root}\n", "decimal"),
        ("o\n1\nAAAA\n", "32 bytes"),
        (f"o\n1\n{root}\n\nx\n", "none empty"),
        (f"o\n1\n{root}", "newline"),
    ]:
        with pytest.raises(NoteError, match=why):
            parse_checkpoint_text(text)
