from api_testkit import Api
from fastapi.testclient import TestClient


def test_healthz(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_openapi_lists_every_documented_endpoint(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path in [
        "/v1/customers",
        "/v1/principals",
        "/v1/relationships",
        "/v1/disclosures",
        "/v1/aliases/{address}",
        "/v1/ledger/checkpoint",
        "/v1/ledger/proof/inclusion",
        "/v1/ledger/proof/consistency",
        "/v1/api-keys",
        "/healthz",
        "/metrics",
    ]:
        assert path in spec["paths"], path
    bodies = spec["paths"]["/v1/customers"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/x-ndjson"} <= set(bodies)


def test_metrics_count_by_route_template_not_by_id(admin: Api) -> None:
    admin.get("/v1/customers/12345")
    text = admin.client.get("/metrics").text
    assert 'route="/v1/customers/{customer_id}"' in text
    assert "12345" not in text


def test_unknown_path_is_a_problem(client: TestClient) -> None:
    response = client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "urn:mailveil:problem:not-found"


def test_wrong_method_is_a_problem(admin: Api) -> None:
    response = admin.client.put("/v1/customers", headers=admin.headers)
    assert response.status_code == 405
    assert response.json()["type"] == "urn:mailveil:problem:method-not-allowed"
