"""Who a sender is: match an outside sender's identity to a known principal by the sending
addresses and domains sellers registered, and by the DKIM domain that signed the mail.

A match says whom an identity *names*; whether that identity was proven is decided apart
(``attribution``): only an authenticated identity may name a culprit."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.contacts.models import Principal


@dataclass
class SenderDirectory:
    """Sending addresses and domains of every principal, read once per detection run.

    A scan, not an index: it is read once per job and kept in memory (a few bytes per
    seller); an index table is the step when millions of sellers register domains."""

    addresses: dict[str, int] = field(default_factory=dict)
    domains: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, session: Session) -> SenderDirectory:
        out = cls()
        rows = session.execute(
            select(Principal.id, Principal.attributes).where(Principal.kind == "seller")
        )
        for pid, attributes in rows:
            attrs = attributes or {}
            for address in attrs.get("sending_addresses") or ():
                out.addresses.setdefault(str(address).lower(), pid)
            delivery = attrs.get("delivery_address")
            if delivery:
                out.addresses.setdefault(str(delivery).lower(), pid)
            for domain in attrs.get("sending_domains") or ():
                out.domains.setdefault(str(domain).lower(), pid)
        return out

    def match(
        self, addresses: Iterable[str | None], dkim_domains: Iterable[str | None] = ()
    ) -> tuple[int | None, str]:
        """(principal id, how) for the first identity that matches, else (None, "")."""
        seen = [a.lower() for a in addresses if a and "@" in a]
        for address in seen:
            if address in self.addresses:
                return self.addresses[address], f"sending address {address}"
        for domain in [d.lower() for d in dkim_domains if d]:
            found = self._domain(domain)
            if found is not None:
                return found, f"DKIM d={domain}"
        for address in seen:
            domain = address.rsplit("@", 1)[1]
            found = self._domain(domain)
            if found is not None:
                return found, f"sending domain {domain}"
        return None, ""

    def owner_of(self, address: str | None, domain: str | None) -> tuple[int | None, str]:
        """The principal whose sending address is ``address``, else whose sending domain
        covers ``domain`` (the From mailbox and its domain), and how."""
        if address and address.lower() in self.addresses:
            return self.addresses[address.lower()], f"sending address {address.lower()}"
        parts = domain.lower().split(".") if domain else []
        for start in range(len(parts) - 1):
            registered = ".".join(parts[start:])
            if registered in self.domains:
                return self.domains[registered], f"sending domain {registered}"
        return None, ""

    def _domain(self, domain: str) -> int | None:
        # A registered domain covers its subdomains (mail.example.com under example.com).
        parts = domain.split(".")
        for start in range(len(parts) - 1):
            found = self.domains.get(".".join(parts[start:]))
            if found is not None:
                return found
        return None


__all__ = ["SenderDirectory"]
