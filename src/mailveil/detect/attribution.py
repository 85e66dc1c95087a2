"""Who a stranger's mail points to, and how sure that is (``strength``).

Two questions for every ``stranger_at_alias`` and ``canary_hit`` entry the relay writes:

**The source** (whom the data was disclosed to) is the alias's principal, from the ledger's
disclosure: a relay record. It counts against that principal unless something else explains
how the stranger knew the alias:

* the mail is a copy of a message the relay delivered *to that same alias* (``relay_copy``
  in the entry: the relay's own DKIM signature, Message-ID or VERP token): the customer, or
  whoever holds the customer's mailbox, sent it back;
* the stranger is the alias's own customer (their address is recorded as ``customer:<id>``).

Then, when the relay never delivered mail to the alias before, only the principal ever held
it: the source counts, strongly. When the relay did (the customer saw the alias in the To:
of the principal's mail), one customer alone could have exposed it, so the source counts
once the aliases of ``NAME_CUSTOMERS`` different customers of the principal were written to
by strangers, and strongly from ``STRONG_CUSTOMERS`` on (``scan`` does the counting). A
canary (no mailbox, nobody else knows it) counts strongly at once.

**The recipient** (who was found holding the data) is named only from an authenticated
identity: SMTP AUTH, or an SPF or DKIM pass aligned with the From domain whose identity lies
in the From domain's own DNS branch, on a From that is a principal's sending address or on
its sending domain. A DKIM pass binds only when its signature's To/Cc name the address the
mail arrived at (``covers == "rcpt"``): otherwise it is the principal's message to someone
else, replayed. Anything else (no SPF pass, softfail, neutral, no or failing DKIM, a DKIM
domain not aligned with From, an unbound signature, DNS that did not answer, an entry written
before these facts were recorded) is a ``claimed`` identity, kept with its reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.detect.matching import SenderDirectory
from mailveil.detect.strength import Piece
from mailveil.ledger.models import LedgerEntry
from mailveil.relay.dmarc import in_same_branch, normalise_domain

NAME_CUSTOMERS = 2
STRONG_CUSTOMERS = 3


def _ref(value: Any, prefix: str) -> int | None:
    if isinstance(value, str) and value.startswith(prefix) and value[len(prefix) :].isdigit():
        return int(value[len(prefix) :])
    return None


# ----------------------------------------------------------------------------- recipient


def _dkim_words(item: dict[str, Any], from_domain: str | None) -> str:
    d, result = item.get("d") or "?", item.get("result") or "?"
    if result != "pass":
        return f"DKIM d={d} {result}"
    if not item.get("aligned"):
        return f"DKIM d={d} passes but is not aligned with the From domain {from_domain}"
    covers = item.get("covers")
    if covers == "rcpt":
        return f"DKIM d={d} passes, aligned, and signs To/Cc naming this address"
    if covers == "other":
        return (
            f"DKIM d={d} passes but its signed To/Cc name other addresses: a copy of mail "
            "sent elsewhere, replayed"
        )
    if covers == "none":
        return f"DKIM d={d} passes but does not sign To/Cc: a copy may be replayed anywhere"
    return f"DKIM d={d} passes; what it signs of the recipient was not recorded"


def _auth_words(detail: dict[str, Any]) -> str:
    spf, spf_domain = detail.get("spf") or "none", detail.get("spf_domain") or "?"
    from_domain = detail.get("from_domain")
    parts = [f"SPF {spf} for {spf_domain}"]
    if spf == "pass" and not detail.get("spf_aligned"):
        parts[0] += f" (not aligned with the From domain {from_domain})"
    dkim = [d for d in detail.get("dkim") or () if isinstance(d, dict)]
    parts += [_dkim_words(d, from_domain) for d in dkim] or ["no DKIM signature"]
    if detail.get("dmarc"):
        parts.append(f"DMARC {detail['dmarc']}")
    return "; ".join(parts)


def authenticated_identities(detail: dict[str, Any]) -> list[tuple[str, str]]:
    """(domain, basis) of every pass that authenticates the From domain for this delivery."""
    from_domain = normalise_domain(str(detail.get("from_domain") or ""))
    if not from_domain:
        return []
    out: list[tuple[str, str]] = []
    spf_domain = normalise_domain(str(detail.get("spf_domain") or ""))
    if detail.get("spf") == "pass" and detail.get("spf_aligned") is True and spf_domain:
        out.append((spf_domain, "spf-aligned"))
    for item in detail.get("dkim") or ():
        if not isinstance(item, dict):
            continue
        d = normalise_domain(str(item.get("d") or ""))
        passed = item.get("result") == "pass" and item.get("aligned") is True
        if d and passed and item.get("covers") == "rcpt":
            out.append((d, "dkim-aligned"))
    # The pass must come from the From domain's own branch (a parent or a subdomain): a
    # sibling under a shared parent missing from the Public Suffix List vouches for nothing.
    return [(d, b) for d, b in out if in_same_branch(d, from_domain)]


def recipient_piece(
    detail: dict[str, Any], directory: SenderDirectory, *, entry: int | None
) -> Piece | None:
    """The evidence about who sent a stranger's mail (module docstring); None when the
    sender names no principal and proved nothing."""
    authed = _ref(detail.get("authenticated_principal"), "principal:")
    if authed is not None:
        return Piece(
            "recipient", authed, "authenticated", "smtp-auth",
            "the sender logged in to the relay with this principal's key",
            counted=True, entry=entry,
        )  # fmt: skip
    header_from = str(detail.get("header_from") or "")
    from_domain = detail.get("from_domain")
    identities = authenticated_identities(detail)
    if identities and "@" in header_from:
        pid, how = directory.owner_of(header_from, from_domain)
        domain, basis = identities[0]
        if pid is not None:
            return Piece(
                "recipient", pid, "authenticated", basis,
                f"From is the principal's {how}, authenticated: {_auth_words(detail)}",
                counted=True, entry=entry,
            )  # fmt: skip
        return Piece(
            "recipient", None, "authenticated", basis,
            f"the sender proved the domain {domain}, which no principal registered",
            entry=entry,
        )  # fmt: skip
    dkim_domains = [
        d.get("d") for d in detail.get("dkim") or () if isinstance(d, dict) and d.get("d")
    ]
    pid, how = directory.match([detail.get("envelope_from"), header_from], dkim_domains)
    if pid is None:
        return None
    basis = "dkim-unbound" if how.startswith("DKIM") else "header-from"
    return Piece(
        "recipient", pid, "claimed", basis,
        f"the mail names the principal ({how}) but nothing proves it: {_auth_words(detail)}",
        entry=entry,
    )  # fmt: skip


# -------------------------------------------------------------------------------- source


def explained(detail: dict[str, Any], customer_id: int | None) -> str | None:
    """Why a stranger's knowledge of the alias is explained without a leak, if it is."""
    copy = detail.get("relay_copy")
    if isinstance(copy, dict) and copy.get("to_this_alias"):
        basis = ", ".join(str(b) for b in copy.get("basis") or ()) or "relay records"
        return (
            "a copy of mail the relay delivered to this very alias (recognised by "
            f"{basis}) came back to it: the customer's own copy, not a leak"
        )
    if customer_id is not None:
        own = f"customer:{customer_id}"
        if own in (detail.get("envelope_from"), detail.get("header_from")):
            return "the alias's own customer wrote to it"
    return None


def alias_shown(session: Session, alias: str, before_seq: int) -> bool:
    """Whether the relay delivered mail to this alias's customer before ``before_seq`` (the
    customer then saw the alias in its To:)."""
    found = session.scalar(
        select(LedgerEntry.seq)
        .where(
            LedgerEntry.alias == alias,
            LedgerEntry.kind == "message",
            LedgerEntry.purpose == "to_customer",
            LedgerEntry.seq < before_seq,
        )
        .limit(1)
    )
    return found is not None


def source_piece(
    session: Session,
    *,
    owner: int | None,
    alias: str | None,
    customer_id: int | None,
    canary: bool,
    detail: dict[str, Any],
    entry: int,
    customers_so_far: Sequence[int] = (),
) -> Piece:
    """The evidence against the alias's principal (module docstring). ``customers_so_far``:
    the other customers of this principal whose aliases strangers wrote to, unexplained."""
    why = explained(detail, customer_id) if not canary else None
    if owner is None:
        return Piece("source", None, "relay-record", "alias-disclosure",
                     "the alias is not one the relay issued", entry=entry)  # fmt: skip
    if canary:
        return Piece(
            "source", owner, "relay-record", "canary",
            "mail reached a canary planted for this principal, known to nobody else",
            counted=True, entry=entry,
        )  # fmt: skip
    if why is not None:
        return Piece("source", owner, "claimed", "explained", why, entry=entry)
    if alias is None or not alias_shown(session, alias, entry):
        return Piece(
            "source", owner, "relay-record", "alias-disclosure",
            "the alias was disclosed to this principal and the relay never delivered mail "
            "to its customer before: only the principal held it",
            counted=True, entry=entry,
        )  # fmt: skip
    customers = {c for c in customers_so_far if c is not None}
    if customer_id is not None:
        customers.add(customer_id)
    n = len(customers)
    if n < NAME_CUSTOMERS:
        return Piece(
            "source", owner, "relay-record", "alias-disclosure",
            "the alias was disclosed to this principal, but its customer also saw it in the "
            "principal's mail: strangers must write to the aliases of "
            f"{NAME_CUSTOMERS} of its customers before it is named ({n} so far)",
            entry=entry,
        )  # fmt: skip
    return Piece(
        "source", owner, "relay-record", "alias-disclosure",
        f"strangers wrote to the aliases of {n} customers of this principal",
        counted=True, weak=n < STRONG_CUSTOMERS, entry=entry,
    )  # fmt: skip


__all__ = [
    "NAME_CUSTOMERS",
    "STRONG_CUSTOMERS",
    "alias_shown",
    "authenticated_identities",
    "explained",
    "recipient_piece",
    "source_piece",
]
