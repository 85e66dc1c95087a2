"""The evidence-strength model and the attribution rules on the facts the relay records:
which sender identities are authenticated, which only claimed (and why), what explains a
stranger's knowledge of an alias, and what a bundle verifier can re-derive from an entry."""

from __future__ import annotations

from typing import Any

import pytest

from mailveil.detect.attribution import authenticated_identities, explained, recipient_piece
from mailveil.detect.matching import SenderDirectory
from mailveil.detect.strength import BASES, STRENGTHS, Piece, describe, leaf_supports, stronger

SHOP = 7
DIRECTORY = SenderDirectory(addresses={"sales@shop.example": SHOP}, domains={"shop.example": SHOP})


def facts(**over: Any) -> dict[str, Any]:
    """A stranger entry's sender record (relay.identity) for mail From sales@shop.example."""
    base: dict[str, Any] = {
        "envelope_from": "sales@shop.example",
        "header_from": "sales@shop.example",
        "authenticated_principal": None,
        "spf": "pass",
        "spf_domain": "shop.example",
        "spf_aligned": True,
        "dkim": [],
        "from_domain": "shop.example",
        "dmarc": "pass",
    }
    return {**base, **over}


def dkim(result: str = "pass", aligned: bool = True, covers: str | None = "rcpt") -> dict[str, Any]:
    return {"d": "shop.example", "s": "k1", "result": result, "aligned": aligned, "covers": covers}


def test_an_aligned_spf_pass_on_the_principals_address_authenticates_it() -> None:
    piece = recipient_piece(facts(), DIRECTORY, entry=3)
    assert piece is not None
    assert (piece.principal_id, piece.strength, piece.basis, piece.counted) == (
        SHOP,
        "authenticated",
        "spf-aligned",
        True,
    )
    assert piece.entry == 3 and "sending address sales@shop.example" in piece.reason


def test_a_bound_aligned_dkim_pass_authenticates_without_spf() -> None:
    piece = recipient_piece(facts(spf="fail", spf_aligned=False, dkim=[dkim()]), DIRECTORY, entry=1)
    assert piece is not None and (piece.basis, piece.counted) == ("dkim-aligned", True)


@pytest.mark.parametrize(
    ("over", "words"),
    [
        ({"spf": "fail", "spf_aligned": False}, "SPF fail for shop.example; no DKIM signature"),
        ({"spf": "softfail", "spf_aligned": False}, "SPF softfail"),
        ({"spf": "neutral", "spf_aligned": False}, "SPF neutral"),
        ({"spf": "none", "spf_aligned": False}, "SPF none"),
        ({"spf": "temperror", "spf_aligned": False}, "SPF temperror"),
        (
            {"spf": "pass", "spf_aligned": False, "spf_domain": "bulk.example"},
            "not aligned with the From domain shop.example",
        ),
        ({"spf": "fail", "spf_aligned": False, "dkim": [dkim(covers="none")]}, "not sign To/Cc"),
        ({"spf": "fail", "spf_aligned": False, "dkim": [dkim(covers="other")]}, "other addresses"),
        ({"spf": "fail", "spf_aligned": False, "dkim": [dkim(covers=None)]}, "was not recorded"),
        ({"spf": "fail", "spf_aligned": False, "dkim": [dkim(aligned=False)]}, "not aligned"),
        (
            {"spf": "fail", "spf_aligned": False, "dkim": [dkim(result="fail")]},
            "d=shop.example fail",
        ),
        ({"spf": "fail", "spf_aligned": False, "dkim": [dkim(result="policy")]}, "policy"),
        # An entry written before these facts were recorded: nothing proves the sender.
        ({"spf_aligned": None}, "SPF pass for shop.example"),
    ],
)
def test_anything_else_is_a_claimed_identity_with_its_reason(
    over: dict[str, Any], words: str
) -> None:
    piece = recipient_piece(facts(**over), DIRECTORY, entry=1)
    assert piece is not None
    assert (piece.principal_id, piece.strength, piece.counted) == (SHOP, "claimed", False)
    assert words in piece.reason, piece.reason


def test_a_pass_from_a_sibling_domain_vouches_for_nothing() -> None:
    sibling = facts(
        header_from="sales@a.hosted.example",
        from_domain="a.hosted.example",
        spf_domain="b.hosted.example",
    )
    assert authenticated_identities(sibling) == []
    assert authenticated_identities(facts(spf_domain="mail.shop.example")) == [
        ("mail.shop.example", "spf-aligned")
    ]


def test_smtp_auth_and_unknown_senders() -> None:
    authed = recipient_piece(facts(authenticated_principal="principal:9"), DIRECTORY, entry=1)
    assert authed is not None and (authed.principal_id, authed.basis) == (9, "smtp-auth")
    unknown = facts(header_from="x@else.example", envelope_from="x@else.example",
                    from_domain="else.example", spf_domain="else.example")  # fmt: skip
    proven = recipient_piece(unknown, DIRECTORY, entry=1)
    assert proven is not None and (proven.principal_id, proven.counted) == (None, False)
    assert recipient_piece({**unknown, "spf": "fail"}, DIRECTORY, entry=1) is None


def test_what_explains_a_strangers_knowledge_of_an_alias() -> None:
    copy = {"basis": ["message-id", "relay-dkim"], "to_this_alias": True}
    assert "customer's own copy" in (explained({"relay_copy": copy}, 4) or "")
    assert explained({"relay_copy": {**copy, "to_this_alias": False}}, 4) is None
    assert explained({"envelope_from": "customer:4"}, 4) == "the alias's own customer wrote to it"
    assert explained({"header_from": "customer:5"}, 4) is None


def test_pieces_that_name_nobody_or_only_claim_never_count() -> None:
    with pytest.raises(ValueError, match="never counts"):
        Piece("recipient", 1, "claimed", "header-from", "x", counted=True)
    with pytest.raises(ValueError, match="never counts"):
        Piece("recipient", None, "authenticated", "spf-aligned", "x", counted=True)
    with pytest.raises(ValueError, match="unknown evidence basis"):
        Piece("source", 1, "relay-record", "a hunch", "x")
    piece = Piece("source", 1, "statistical", "guilt-ranking", "p", counted=True, weak=True)
    assert not piece.strong and Piece.from_dict(piece.to_dict()) == piece


def test_strengths_order_and_the_published_model() -> None:
    assert stronger("statistical", "relay-record") == "relay-record"
    assert stronger(None, "claimed") == "claimed"
    assert stronger("authenticated", "statistical") == "authenticated"
    model = describe()
    assert model["strengths"] == list(STRENGTHS)
    assert "claimed" not in model["counting"]
    assert set(model["bases"]) == set(BASES)


def test_a_bundle_verifier_rederives_authenticated_pieces_from_the_entry() -> None:
    leaf = {"kind": "stranger_at_alias", "actor": None, "detail": facts(dkim=[dkim()])}
    spf = Piece("recipient", SHOP, "authenticated", "spf-aligned", "", counted=True).to_dict()
    assert leaf_supports(spf, leaf)[0]
    bound = {**spf, "basis": "dkim-aligned"}
    assert leaf_supports(bound, leaf)[0]
    unbound = {"kind": "x", "detail": facts(spf="fail", dkim=[dkim(covers="none")])}
    assert not leaf_supports(bound, unbound)[0]
    assert not leaf_supports(spf, unbound)[0]
    forged = {**spf, "strength": "claimed", "basis": "header-from"}
    assert not leaf_supports(forged, leaf)[0]
    auth = {**spf, "basis": "smtp-auth"}
    assert not leaf_supports(auth, leaf)[0]
    assert leaf_supports(auth, {"detail": {"authenticated_principal": f"principal:{SHOP}"}})[0]
