"""The API test client: one API key, with shortcuts for the set-up most tests need. Those
shortcuts are world_kit's API-driven variant: they seed through the endpoints, for tests that
mean to go through the API; tests that only need rows seed with world_kit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from mailveil.ledger.events import Event
from mailveil.runtime import Runtime


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

    def disclosure(
        self, customer_id: int, principal_id: int, purpose: str = "order", **extra: Any
    ) -> Any:
        """An allowed disclosure (201), as the backend asks for it."""
        return self.ok(
            "post",
            "/v1/disclosures",
            201,
            json={
                "customer_id": customer_id,
                "principal_id": principal_id,
                "purpose": purpose,
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


def stranger_at(
    runtime: Runtime,
    session: Session,
    *,
    alias: str,
    customer_id: int,
    owner_id: int,
    sender: str = "deals@spam.example",
    proven: bool = True,
) -> int:
    """Append the entry the relay writes for a stranger's mail to ``alias`` (as
    ``relay.identity`` shapes it): ``proven``, the sender's domain passed SPF aligned with
    its From; else SPF failed and nothing else was signed. Returns its ledger seq."""
    domain = sender.rpartition("@")[2]
    detail = {
        "principal": f"principal:{owner_id}",
        "reply": "250 2.7.0",
        "revoked": False,
        "envelope_from": sender,
        "header_from": sender,
        "authenticated_principal": None,
        "client_ip": "203.0.113.9",
        "helo": f"mx.{domain}",
        "spf": "pass" if proven else "fail",
        "spf_domain": domain,
        "spf_aligned": proven,
        "dkim": [],
        "from_domain": domain,
        "dmarc": "none",
        "action": "quarantine",
    }
    event = Event(
        "stranger_at_alias", None, f"customer:{customer_id}", alias, "to_customer", None, detail
    )
    seq = runtime.ledger.append(session, [event])[0]
    session.commit()
    return seq
