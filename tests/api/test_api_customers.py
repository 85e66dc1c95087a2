import json

import pytest
from api_testkit import Api
from fastapi.testclient import TestClient

from mailveil.runtime import Runtime

ALICE = "Alice.Smith+shop@Example.com"


def _problem(response: object, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.headers["content-type"] == "application/problem+json"  # type: ignore[attr-defined]
    body: dict[str, object] = response.json()  # type: ignore[attr-defined]
    assert body["type"] == f"urn:mailveil:problem:{code}"
    assert body["status"] == status
    return body


def test_create_and_read_back_without_the_address(backend: Api) -> None:
    created = backend.customer("c-1", ALICE, "de", opt_outs=["seller_unsolicited"])
    assert created["external_id"] == "c-1" and created["country"] == "DE"
    assert "email" not in created and "address" not in json.dumps(created).lower()
    fetched = backend.ok("get", f"/v1/customers/{created['id']}")
    assert fetched["opt_outs"] == ["seller_unsolicited"]
    by_ext = backend.ok("get", "/v1/customers", params={"external_id": "c-1"})
    assert [c["id"] for c in by_ext["items"]] == [created["id"]]
    assert ALICE.lower() not in json.dumps([created, fetched, by_ext]).lower()


def test_list_is_paged(backend: Api) -> None:
    ids = [backend.customer(f"p-{i}", f"p{i}@example.org")["id"] for i in range(5)]
    first = backend.ok("get", "/v1/customers", params={"limit": 2})
    assert [c["id"] for c in first["items"]] == ids[:2]
    second = backend.ok("get", "/v1/customers", params={"limit": 2, "after": first["next"]})
    assert [c["id"] for c in second["items"]] == ids[2:4]
    last = backend.ok("get", "/v1/customers", params={"limit": 2, "after": second["next"]})
    assert [c["id"] for c in last["items"]] == ids[4:] and last["next"] is None


def test_duplicate_address_or_id_changes_nothing(backend: Api) -> None:
    first = backend.customer("c-1", ALICE)
    dup_addr = backend.post(
        "/v1/customers", json={"external_id": "c-2", "email": ALICE.upper(), "country": "FR"}
    )
    body = _problem(dup_addr, 409, "duplicate")
    assert ALICE.lower() not in json.dumps(body).lower()
    _problem(
        backend.post(
            "/v1/customers",
            json={"external_id": "c-1", "email": "other@example.com", "country": "FR"},
        ),
        409,
        "duplicate",
    )
    items = backend.ok("get", "/v1/customers")["items"]
    assert [(c["id"], c["external_id"], c["country"]) for c in items] == [
        (first["id"], "c-1", "DE")
    ]


@pytest.mark.parametrize("bad", ["not-an-address", "a@@b.example", "x@localhost", "", "a" * 330])
def test_invalid_address_is_422_and_not_echoed(backend: Api, bad: str) -> None:
    response = backend.post(
        "/v1/customers", json={"external_id": "c-9", "email": bad, "country": "DE"}
    )
    assert response.status_code == 422
    assert response.json()["type"] in (
        "urn:mailveil:problem:invalid-address",
        "urn:mailveil:problem:invalid-input",
    )
    if bad:
        assert bad not in response.text


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ('{"external_id": "c", "email": "a@example.com", "country": "DE"', 400, "malformed-json"),
        ("[1, 2]", 422, "invalid-input"),
        ('{"external_id": 7, "email": "a@example.com", "country": "DE"}', 422, "invalid-input"),
        ('{"external_id": "c", "email": "a@example.com", "country": "ZZ"}', 422, "invalid-input"),
        (
            '{"external_id": "c", "email": "a@example.com", "country": "DE", "x": 1}',
            422,
            "invalid-input",
        ),
        ('{"external_id": "c", "country": "DE"}', 422, "invalid-input"),
    ],
)
def test_garbage_gets_a_specific_problem(
    backend: Api, payload: str, status: int, code: str
) -> None:
    response = backend.post(
        "/v1/customers", content=payload, headers={"content-type": "application/json"}
    )
    body = _problem(response, status, code)
    assert "a@example.com" not in json.dumps(body)
    assert backend.ok("get", "/v1/customers")["items"] == []


def test_validation_errors_do_not_echo_input(backend: Api) -> None:
    response = backend.post(
        "/v1/customers",
        json={"external_id": ["x"], "email": "bob.secret@example.net", "country": "DE"},
    )
    assert response.status_code == 422
    assert "bob.secret" not in response.text


def test_oversized_body_is_413(runtime: Runtime, client: TestClient, backend: Api) -> None:
    big = json.dumps(
        {
            "external_id": "c",
            "email": "a@example.com",
            "country": "DE",
            "opt_outs": ["x" * 60] * 30_000,
        }
    )
    assert len(big) > runtime.settings.max_json_body_bytes
    _problem(
        backend.post("/v1/customers", content=big, headers={"content-type": "application/json"}),
        413,
        "payload-too-large",
    )

    def chunks() -> object:
        for _ in range(40):
            yield b"x" * 65536

    # Without Content-Length (chunked), the limit is enforced on the bytes that arrive.
    _problem(
        backend.post(
            "/v1/customers", content=chunks(), headers={"content-type": "application/json"}
        ),
        413,
        "payload-too-large",
    )


def test_bulk_ndjson_keeps_good_rows_and_reports_bad_lines(backend: Api) -> None:
    backend.customer("c-0", "existing@example.com")
    lines = [
        {"external_id": "c-1", "email": "one@example.com", "country": "DE"},
        {"external_id": "c-2", "email": "nope", "country": "DE"},
        "this is not json",
        {"external_id": "c-3", "email": "Existing@Example.com", "country": "FR"},
        {"external_id": "c-4", "email": "four@example.com", "country": "FR"},
        {"external_id": "c-4", "email": "four-again@example.com", "country": "FR"},
    ]
    body = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n"
    response = backend.post(
        "/v1/customers", content=body, headers={"content-type": "application/x-ndjson"}
    )
    assert response.status_code == 200, response.text
    summary = response.json()
    assert (summary["created"], summary["duplicates"], summary["errors"]) == (2, 2, 2)
    assert {p["line"]: p["status"] for p in summary["problems"]} == {
        2: "error",
        3: "error",
        4: "duplicate",
        6: "duplicate",
    }
    for secret in ("nope", "existing@example.com", "four-again@example.com"):
        assert secret not in response.text.lower()
    stored = {c["external_id"] for c in backend.ok("get", "/v1/customers")["items"]}
    assert stored == {"c-0", "c-1", "c-4"}


def test_empty_bulk_body_is_an_error(backend: Api) -> None:
    response = backend.post(
        "/v1/customers", content=b"", headers={"content-type": "application/x-ndjson"}
    )
    _problem(response, 422, "invalid-input")


def test_idempotency_key_replays_and_refuses_a_different_body(backend: Api) -> None:
    headers = {"Idempotency-Key": "req-1"}
    payload = {"external_id": "c-1", "email": "one@example.com", "country": "DE"}
    first = backend.post("/v1/customers", json=payload, headers=headers)
    again = backend.post("/v1/customers", json=payload, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert len(backend.ok("get", "/v1/customers")["items"]) == 1
    other = backend.post("/v1/customers", json={**payload, "external_id": "c-2"}, headers=headers)
    _problem(other, 422, "idempotency-key-reused")
    assert len(backend.ok("get", "/v1/customers")["items"]) == 1


def test_bulk_idempotency_replays_the_summary(backend: Api) -> None:
    body = json.dumps({"external_id": "c-1", "email": "one@example.com", "country": "DE"})
    headers = {"content-type": "application/x-ndjson", "Idempotency-Key": "bulk-1"}
    first = backend.post("/v1/customers", content=body, headers=headers)
    again = backend.post("/v1/customers", content=body, headers=headers)
    assert first.json()["created"] == 1 and again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"


def test_patch_and_delete(backend: Api) -> None:
    c = backend.customer("c-1", "one@example.com")
    patched = backend.ok(
        "patch", f"/v1/customers/{c['id']}", json={"country": "FR", "opt_outs": ["marketing"]}
    )
    assert (patched["country"], patched["opt_outs"]) == ("FR", ["marketing"])
    # The document lists the ISO codes (upper or lower case); the API takes exactly those.
    for odd in ("fR", " FR", "ZZ", "00"):
        refused = backend.patch(f"/v1/customers/{c['id']}", json={"country": odd})
        assert refused.status_code == 422, refused.text
    deleted = backend.ok("delete", f"/v1/customers/{c['id']}")
    assert deleted["deleted_at"] is not None
    assert backend.ok("get", "/v1/customers")["items"] == []


def test_unknown_customer_is_404(backend: Api) -> None:
    _problem(backend.get("/v1/customers/999999"), 404, "not-found")
    _problem(backend.get("/v1/customers", params={"external_id": "nobody"}), 404, "not-found")
