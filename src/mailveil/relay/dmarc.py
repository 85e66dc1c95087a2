"""DMARC (RFC 7489): organisational domains, policy records and identifier alignment.

The organisational domain is the public suffix plus one label, from the Public Suffix List
bundled in the ``publicsuffixlist`` package (read from the package's own file, never fetched;
ICANN and private sections both count, so ``a.github.io`` and ``b.github.io`` are different
owners). A name that is itself a public suffix, or unknown to the list, is its own
organisational domain (the list's default rule ``*`` makes ``x.example`` organisational for
an unlisted TLD ``example``).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailveil.relay.dns import DnsTemporaryError, Resolver

if TYPE_CHECKING:
    from publicsuffixlist import PublicSuffixList

POLICIES = ("none", "quarantine", "reject")
MAX_DOMAIN_LENGTH = 253
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")


@functools.cache
def _psl() -> PublicSuffixList:
    # Parsing the bundled list takes ~50 ms: once per process, on first use.
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()


def normalise_domain(text: str) -> str | None:
    """Lower-case A-label form of a domain name, or None when it cannot be one.

    Address literals (``[192.0.2.1]``), empty labels and over-long names are refused.
    """
    name = text.strip().rstrip(".")
    if not name or name.startswith("["):
        return None
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    name = name.lower()
    if len(name) > MAX_DOMAIN_LENGTH:
        return None
    if not all(_LABEL.match(label) for label in name.split(".")):
        return None
    return name


def organisational_domain(domain: str) -> str:
    """The registrable domain of ``domain`` (already normalised); itself when none exists."""
    found = _psl().privatesuffix(domain)
    return found if found else domain


def in_same_branch(a: str, b: str) -> bool:
    """True when one domain is the other or a subdomain of it (its owner controls both)."""
    return a == b or a.endswith("." + b) or b.endswith("." + a)


def aligned(identity: str, from_domain: str, mode: str = "r") -> bool:
    """Identifier alignment (RFC 7489 3.1): strict is equality, relaxed compares
    organisational domains."""
    if not identity or not from_domain:
        return False
    if identity == from_domain:
        return True
    if mode == "s":
        return False
    return organisational_domain(identity) == organisational_domain(from_domain)


@dataclass(frozen=True)
class DmarcRecord:
    """A published DMARC policy: where it was found and the tags alignment needs."""

    domain: str
    policy: str
    subdomain_policy: str | None = None
    adkim: str = "r"
    aspf: str = "r"

    def policy_for(self, from_domain: str) -> str:
        # sp= applies when the record came from the organisational domain of a subdomain.
        if from_domain != self.domain and self.subdomain_policy:
            return self.subdomain_policy
        return self.policy


def parse_dmarc(text: str, domain: str) -> DmarcRecord | None:
    """A ``v=DMARC1`` record, or None when the text is not one (RFC 7489 6.3, 6.6.3).

    A record whose p= is missing or unknown still counts, as p=none: the domain did publish
    DMARC, so alignment is required for a pass.
    """
    parts = [p.strip() for p in text.split(";")]
    if not parts or parts[0].replace(" ", "") != "v=DMARC1":
        return None
    tags: dict[str, str] = {}
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if sep:
            tags.setdefault(key.strip().lower(), value.strip().lower())
    policy = tags.get("p", "none")
    sub = tags.get("sp")
    return DmarcRecord(
        domain=domain,
        policy=policy if policy in POLICIES else "none",
        subdomain_policy=sub if sub in POLICIES else None,
        adkim="s" if tags.get("adkim") == "s" else "r",
        aspf="s" if tags.get("aspf") == "s" else "r",
    )


def _record_at(resolver: Resolver, domain: str) -> DmarcRecord | None:
    found = [rec for txt in resolver.txt(f"_dmarc.{domain}") if (rec := parse_dmarc(txt, domain))]
    # None, or several: RFC 7489 6.6.3 says to act as if there were none.
    return found[0] if len(found) == 1 else None


def lookup_dmarc(resolver: Resolver, from_domain: str) -> DmarcRecord | None:
    """The policy for ``from_domain``: its own record, else its organisational domain's.

    Raises ``DnsTemporaryError`` when DNS did not answer.
    """
    record = _record_at(resolver, from_domain)
    if record is None:
        org = organisational_domain(from_domain)
        if org != from_domain:
            record = _record_at(resolver, org)
    return record


__all__ = [
    "POLICIES",
    "DmarcRecord",
    "DnsTemporaryError",
    "aligned",
    "in_same_branch",
    "lookup_dmarc",
    "normalise_domain",
    "organisational_domain",
    "parse_dmarc",
]
