import pytest
from api_testkit import Api
from fastapi.testclient import TestClient


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer",
        "Bearer nonsense",
        "Basic dXNlcjpwYXNz",
        "Bearer mvk_unknownkeyid_secret",
        "Bearer mvk__",
    ],
)
def test_missing_or_wrong_key_is_401(client: TestClient, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    response = client.get("/v1/customers", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["type"] == "urn:mailveil:problem:unauthenticated"


def test_right_key_id_with_wrong_secret_is_401(admin: Api) -> None:
    key_id = admin.token.split("_")[1]
    forged = Api(admin.client, f"mvk_{key_id}_{'A' * 43}")
    assert forged.get("/v1/customers").status_code == 401


def test_revoked_key_stops_working(admin: Api) -> None:
    backend = admin.key_for("backend")
    assert backend.get("/v1/customers").status_code == 200
    key_id = backend.token.split("_")[1]
    assert admin.ok("delete", f"/v1/api-keys/{key_id}")["revoked"] is True
    assert backend.get("/v1/customers").status_code == 401


@pytest.mark.parametrize(
    ("role", "method", "url", "status"),
    [
        ("backend", "post", "/v1/api-keys", 403),
        ("investigator", "get", "/v1/customers", 403),
        ("investigator", "post", "/v1/principals", 403),
        ("backend", "get", "/v1/aliases/x@relay.mailveil.localhost", 403),
        ("admin", "get", "/v1/aliases/x@relay.mailveil.localhost", 403),
    ],
)
def test_roles_are_enforced(admin: Api, role: str, method: str, url: str, status: int) -> None:
    caller = admin if role == "admin" else admin.key_for(role)
    kwargs = {"json": {}} if method == "post" else {}
    response = getattr(caller, method)(url, **kwargs)
    assert response.status_code == status, response.text
    assert response.json()["type"] == "urn:mailveil:problem:forbidden"


def test_seller_and_employee_keys_must_be_bound(admin: Api) -> None:
    response = admin.post("/v1/api-keys", json={"role": "seller"})
    assert response.status_code == 422
    employee = admin.principal("employee", "e-1", attributes={"team": "support"})
    response = admin.post("/v1/api-keys", json={"role": "seller", "principal_id": employee["id"]})
    assert response.status_code == 409  # well formed; the principal is of another kind
    assert "seller" in response.json()["detail"]


def test_token_is_shown_once_and_stored_hashed(admin: Api) -> None:
    created = admin.ok("post", "/v1/api-keys", 201, json={"role": "backend", "label": "erp"})
    listed = admin.ok("get", "/v1/api-keys")
    assert created["token"].startswith("mvk_")
    assert all("token" not in k for k in listed)
    assert created["token"] not in str(listed)
    assert {k["label"] for k in listed} >= {"erp"}
