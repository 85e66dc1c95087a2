"""The ledger's proofs verify against signed checkpoints; aliases answer investigators only."""

from typing import Any

from api_testkit import Api

from mailveil.ledger import merkle
from mailveil.ledger.signing import verify_checkpoint
from mailveil.runtime import Runtime


def _disclosures(backend: Api, n: int) -> list[dict[str, Any]]:
    seller = backend.principal("seller", "s-1", display_name="Acme")
    out = []
    for i in range(n):
        c = backend.customer(f"c-{i}", f"buyer{i}@example.com")
        backend.order(f"o-{i}", c["id"], seller["id"])
        out.append(backend.disclosure(c["id"], seller["id"], ref=f"o-{i}"))
    return out


def test_checkpoint_is_signed_and_proofs_verify(backend: Api, runtime: Runtime) -> None:
    _disclosures(backend, 5)
    cp = backend.ok("get", "/v1/ledger/checkpoint")
    assert cp["tree_size"] == 5
    parsed = verify_checkpoint(cp["note"], runtime.ledger.signer.public_key)
    assert parsed.tree_size == 5 and parsed.root.hex() == cp["root_hash"]
    for index in range(5):
        proof = backend.ok(
            "get", "/v1/ledger/proof/inclusion", params={"index": index, "tree_size": 5}
        )
        merkle.verify_inclusion(
            index,
            5,
            bytes.fromhex(proof["leaf_hash"]),
            [bytes.fromhex(h) for h in proof["proof"]],
            parsed.root,
        )

    late_seller = backend.principal("seller", "s-2")
    more = backend.customer("c-x", "late@example.com")
    backend.order("o-x", more["id"], late_seller["id"])
    backend.disclosure(more["id"], late_seller["id"])
    cp2 = backend.ok("get", "/v1/ledger/checkpoint")
    assert cp2["tree_size"] == 6
    consistency = backend.ok(
        "get", "/v1/ledger/proof/consistency", params={"first": 5, "second": 6}
    )
    merkle.verify_consistency(
        5,
        6,
        parsed.root,
        bytes.fromhex(cp2["root_hash"]),
        [bytes.fromhex(h) for h in consistency["proof"]],
    )


def test_proof_requests_out_of_range(backend: Api) -> None:
    _disclosures(backend, 2)
    assert backend.get("/v1/ledger/proof/inclusion", params={"index": 7}).status_code == 404
    assert backend.get("/v1/ledger/proof/inclusion", params={"index": -1}).status_code == 422
    bad = backend.get("/v1/ledger/proof/consistency", params={"first": 3, "second": 2})
    assert bad.status_code in (404, 422)
    assert bad.headers["content-type"] == "application/problem+json"


def test_empty_ledger_has_no_checkpoint(backend: Api) -> None:
    response = backend.get("/v1/ledger/checkpoint")
    assert response.status_code == 404


def test_alias_report_names_the_principal(backend: Api, investigator: Api) -> None:
    disclosed = _disclosures(backend, 1)[0]
    report = investigator.ok("get", f"/v1/aliases/{disclosed['alias']}")
    assert report["principal"]["external_id"] == "s-1"
    assert report["customer"]["external_id"] == "c-0"
    assert [h["kind"] for h in report["history"]] == ["disclosure"]
    assert "buyer0@example.com" not in str(report)


def test_unknown_alias_is_404(investigator: Api) -> None:
    response = investigator.get("/v1/aliases/nobody@relay.mailveil.localhost")
    assert response.status_code == 404


def test_revoke_alias_is_recorded(backend: Api, investigator: Api) -> None:
    disclosed = _disclosures(backend, 1)[0]
    revoked = backend.ok(
        "post", f"/v1/aliases/{disclosed['alias']}/revoke", json={"reason": "seller offboarded"}
    )
    assert revoked["revoked_at"] is not None
    again = backend.post(f"/v1/aliases/{disclosed['alias']}/revoke", json={"reason": "again"})
    assert again.status_code == 410
    report = investigator.ok("get", f"/v1/aliases/{disclosed['alias']}")
    assert [h["kind"] for h in report["history"]] == ["disclosure", "alias_revoked"]
    # A revoked alias is not silently re-issued to its pair.
    response = backend.post(
        "/v1/disclosures",
        json={
            "customer_id": disclosed["customer_id"],
            "principal_id": disclosed["principal_id"],
            "purpose": "order",
            "ref": "o-0",
        },
    )
    assert response.status_code in (403, 410)
