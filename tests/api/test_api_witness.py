"""The ledger's key, its checkpoints with the witnesses' cosignatures, the witnesses' status
and alerts, and checking through the API; a witness answers on a loopback port."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_testkit import Api
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "witness"))
from witness_testkit import witness_thread

from mailveil.api.app import _checkpoint_once
from mailveil.config import Settings, load_settings
from mailveil.ledger import merkle
from mailveil.ledger.notes import parse_vkey
from mailveil.runtime import Runtime
from mailveil.witness.client import add_checkpoint
from mailveil.witness.home import WitnessHome
from mailveil.witness.policy import check_checkpoint


@pytest.fixture(scope="module")
def witness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    directory = tmp_path_factory.mktemp("api-witness")
    with witness_thread(directory) as url:
        yield directory, url


@pytest.fixture
def settings(tmp_path: Path, witness: tuple[Path, str]) -> Settings:
    directory, url = witness
    vkey = WitnessHome(directory).load().vkey.vkey
    return load_settings(
        env={},
        data_dir=tmp_path / "var",
        checkpoint_every_entries=1000,
        ledger_origin=f"api.test/{uuid.uuid4().hex[:12]}",  # each test is a new ledger
        witnesses=f"{vkey} {url}",
    )


@pytest.fixture(autouse=True)
def followed(runtime: Runtime, witness: tuple[Path, str]) -> None:
    """The witness's operator agreed to follow this ledger (`mailveil witness add-log`)."""
    WitnessHome(witness[0]).state().add_log(
        runtime.settings.origin, runtime.ledger.signer.verifier_key
    )


def _grow(backend: Api, n: int, tag: str) -> None:
    seller = backend.principal("seller", f"s-{tag}")
    for i in range(n):
        c = backend.customer(f"c-{tag}-{i}", f"buyer{tag}{i}@example.com")
        backend.order(f"o-{tag}-{i}", c["id"], seller["id"])
        backend.ok(
            "post",
            "/v1/disclosures",
            201,
            json={"customer_id": c["id"], "principal_id": seller["id"], "purpose": "order"},
        )


def test_the_verifier_key_is_public_and_both_of_its_forms_verify(
    client: TestClient, backend: Api, runtime: Runtime
) -> None:
    key = client.get("/v1/ledger/key").json()  # no API key needed
    assert key["verifier_key"] == runtime.ledger.signer.verifier_key
    vkey = parse_vkey(key["verifier_key"])
    assert (vkey.name, vkey.key_id.hex(), vkey.public_key_b64) == (
        key["key_name"],
        key["key_id"],
        key["public_key"],
    )
    _grow(backend, 3, "k")
    cp = backend.ok("get", "/v1/ledger/checkpoint")
    assert cp["verifier_key"] == key["verifier_key"] and cp["public_key"] == key["public_key"]
    for form in (cp["verifier_key"], cp["public_key"]):
        assert check_checkpoint(cp["note"], form).signed
        answer = backend.ok(
            "post",
            "/v1/ledger/verify",
            json={"checkpoint": cp["note"], "key": form, "witnesses": []},
        )
        assert answer["signed"] and answer["ok"] and answer["tree_size"] == cp["tree_size"]
    other = parse_vkey("monkeys+db4d9f7e+AULaJMvTtDLHPUcUrjdDad9vDlh/PTfC2VV60JUtCfWT")
    wrong = backend.ok(
        "post", "/v1/ledger/verify", json={"checkpoint": cp["note"], "key": other.public_key_b64}
    )
    assert not wrong["ok"] and "no valid signature by the ledger key" in wrong["problems"][0]


def test_checkpoints_carry_their_cosignatures_and_the_job_publishes_them(
    admin: Api, backend: Api, runtime: Runtime, witness: tuple[Path, str]
) -> None:
    _grow(backend, 4, "a")
    published = admin.ok("post", "/v1/ledger/witnesses/publish")
    assert [o["result"] for o in published["outcomes"]] == ["cosigned"]
    cp = backend.ok("get", "/v1/ledger/checkpoint")
    assert cp["tree_size"] == published["tree_size"] and cp["witnessed"] is True
    [cosig] = cp["cosignatures"]
    assert cosig["witness"] == "witness.test/api" and cp["cosigned_note"].endswith(cosig["line"])
    assert (
        backend.ok("get", "/v1/ledger/checkpoint", params={"witnessed": "true"})["tree_size"]
        == cp["tree_size"]
    )
    verified = backend.ok("post", "/v1/ledger/verify", json={"checkpoint": cp["cosigned_note"]})
    assert verified["ok"] and verified["cosigned_by"] == ["witness.test/api"]
    status = backend.ok("get", "/v1/ledger/witnesses")
    assert status["quorum"] == 1 and status["witnessed_tree_size"] == cp["tree_size"]
    assert status["items"][0]["cosigned_size"] == cp["tree_size"]

    # The background checkpoint job publishes what it signs.
    _grow(backend, 2, "b")
    _checkpoint_once(runtime)
    newer = backend.ok("get", "/v1/ledger/witnesses")
    assert newer["witnessed_tree_size"] > cp["tree_size"]

    # Someone else holding the signing key shows the witness another history first.
    origin = runtime.settings.origin
    size = newer["witnessed_tree_size"]
    forged = [merkle.leaf_hash(f"forged {i}".encode()) for i in range(size + 3)]
    note = runtime.ledger.signer.sign_checkpoint(origin, size + 3, merkle.root(forged), 1)
    _, url = witness
    assert add_checkpoint(url, 0, [], note, timeout=10).status == 409  # it knows `size`
    stale_root = merkle.root(forged[:size])
    assert stale_root != bytes.fromhex(cp["root_hash"])
    # The witness refuses the forged history (it does not extend what it cosigned) ...
    proof = merkle.consistency_path(size, size + 3, merkle.memory_subtree(forged))
    assert add_checkpoint(url, size, proof, note, timeout=10).status == 422
    # ... and when the real ledger publishes, nothing changed for it: still consistent.
    _grow(backend, 1, "c")
    again = admin.ok("post", "/v1/ledger/witnesses/publish")
    assert [o["result"] for o in again["outcomes"]] == ["cosigned"]
    assert backend.ok("get", "/v1/ledger/alerts")["items"] == []


def test_a_refused_publication_is_an_alert_in_the_api(
    admin: Api, backend: Api, runtime: Runtime, witness: tuple[Path, str]
) -> None:
    _grow(backend, 3, "x")
    assert admin.ok("post", "/v1/ledger/witnesses/publish")["cosigned"] == 1
    # Another history of the same ledger (same key) reaches the witness first and grows it.
    size = backend.ok("get", "/v1/ledger/witnesses")["witnessed_tree_size"]
    real = backend.ok("get", "/v1/ledger/checkpoint", params={"witnessed": "true"})
    origin = runtime.settings.origin
    # Rebuild the real tree's leaves from the ledger's proofs: the fork keeps them, then adds.
    leaves = [
        bytes.fromhex(
            backend.ok("get", "/v1/ledger/proof/inclusion", params={"index": i, "tree_size": size})[
                "leaf_hash"
            ]
        )
        for i in range(size)
    ]
    assert merkle.root(leaves).hex() == real["root_hash"]
    fork = leaves + [merkle.leaf_hash(f"fork {i}".encode()) for i in range(10)]
    note = runtime.ledger.signer.sign_checkpoint(origin, len(fork), merkle.root(fork), 1)
    proof = merkle.consistency_path(size, len(fork), merkle.memory_subtree(fork))
    _, url = witness
    assert add_checkpoint(url, size, proof, note, timeout=10).status == 200
    # Now the real ledger, grown differently, is refused: the witness saw a fork.
    _grow(backend, 12, "y")
    published = admin.ok("post", "/v1/ledger/witnesses/publish")
    [outcome] = published["outcomes"]
    assert outcome["result"] == "refused" and outcome["alert"]["reason"] == "inconsistent"
    [alert] = backend.ok("get", "/v1/ledger/alerts")["items"]
    assert alert["witness"] == "witness.test/api" and alert["witness_size"] == len(fork)
    assert "rewritten or forked" in alert["summary"]
    status: Any = backend.ok("get", "/v1/ledger/witnesses")["items"][0]
    assert status["failures"] == 1 and status["last_error"].startswith("refused")
    # Publishing is an admin's act; reading the status is anyone's.
    assert backend.post("/v1/ledger/witnesses/publish").status_code == 403
