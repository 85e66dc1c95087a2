"""The API test client: one API key, with shortcuts for the set-up most tests need."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi.testclient import TestClient


@dataclass
class Api:
    """A client holding one API key, with shortcuts for the set-up most tests need."""

    client: TestClient
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, url: str, **kw: Any) -> Any:
        return self.client.get(url, headers={**self.headers, **kw.pop("headers", {})}, **kw)

    def post(self, url: str, **kw: Any) -> Any:
        return self.client.post(url, headers={**self.headers, **kw.pop("headers", {})}, **kw)

    def patch(self, url: str, **kw: Any) -> Any:
        return self.client.patch(url, headers={**self.headers, **kw.pop("headers", {})}, **kw)

    def delete(self, url: str, **kw: Any) -> Any:
        return self.client.delete(url, headers={**self.headers, **kw.pop("headers", {})}, **kw)

    def ok(self, method: str, url: str, expect: int = 200, **kw: Any) -> Any:
        response = getattr(self, method)(url, **kw)
        assert response.status_code == expect, response.text
        return response.json()

    def customer(self, external_id: str, email: str, country: str = "DE", **extra: Any) -> Any:
        return self.ok(
            "post",
            "/v1/customers",
            201,
            json={"external_id": external_id, "email": email, "country": country, **extra},
        )

    def principal(self, kind: str, external_id: str, **extra: Any) -> Any:
        return self.ok(
            "post", "/v1/principals", 201, json={"kind": kind, "external_id": external_id, **extra}
        )

    def order(self, external_id: str, customer_id: int, seller_id: int, **extra: Any) -> Any:
        return self.ok(
            "post",
            "/v1/relationships",
            201,
            json={
                "type": "order",
                "external_id": external_id,
                "customer_id": customer_id,
                "seller_id": seller_id,
                **extra,
            },
        )

    def key_for(self, role: str, principal_id: int | None = None) -> Api:
        body = self.ok(
            "post", "/v1/api-keys", 201, json={"role": role, "principal_id": principal_id}
        )
        return Api(self.client, body["token"])

    def case(
        self, external_id: str, customer_id: int, assignee_id: int | None, **extra: Any
    ) -> Any:
        return self.ok(
            "post",
            "/v1/relationships",
            201,
            json={
                "type": "case",
                "external_id": external_id,
                "customer_id": customer_id,
                "assignee_id": assignee_id,
                **extra,
            },
        )
