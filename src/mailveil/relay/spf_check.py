"""SPF (RFC 7208) through pyspf, with its DNS questions answered by our ``Resolver``.

pyspf asks DNS through one method, ``query.dns(name, qtype)``; a subclass answers it from
the injected resolver instead of pyspf's module-wide ``DNSLookup`` (replacing that would
change every SPF check in the process, tests included). The subclass keeps pyspf's rules:
answers are cached for the one check, void lookups are counted (RFC 7208 4.6.4), and it adds
a cap on the number of questions and a wall-clock deadline, so a hostile record costs at most
``MAX_SPF_QUERIES`` lookups.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from mailveil.relay.dmarc import normalise_domain
from mailveil.relay.dns import DnsTemporaryError, Resolver, encode_txt

SPF_RESULTS = frozenset({"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"})
# RFC 7208 allows 10 mechanisms that query DNS, each MX or PTR expanding to 10 more names.
MAX_SPF_QUERIES = 120


def _answer(resolver: Resolver, name: str, qtype: str) -> list[Any]:
    # The shapes pyspf's own DNS drivers return for each type.
    if qtype == "TXT":
        return [(encode_txt(value),) for value in resolver.txt(name)]
    if qtype == "A":
        return list(resolver.a(name))
    if qtype == "AAAA":
        return list(resolver.aaaa(name))
    if qtype == "MX":
        return list(resolver.mx(name))
    if qtype == "PTR":
        return list(resolver.ptr(name))
    # Type 99 (SPF) is only asked in pyspf's "harsh" mode, which we do not use.
    return []


@functools.cache
def _query_class() -> Any:
    import spf

    class ResolverQuery(spf.query):  # type: ignore[misc]
        def __init__(self, resolver: Resolver, deadline: float, **kwargs: Any) -> None:
            self.mv_resolver = resolver
            self.mv_deadline = deadline
            self.mv_questions = 0
            super().__init__(**kwargs)

        def dns(
            self, name: Any, qtype: str, cnames: Any = None, ignore_void: bool = False
        ) -> list[Any]:
            name = str(name).rstrip(".").lower()
            if not name or not all(0 < len(label) < 64 for label in name.split(".")):
                return []  # not a DNS name: no records (as pyspf does)
            key = (name, qtype)
            cached: list[Any] = self.cache.get(key, [])
            if cached:
                return cached
            self.mv_questions += 1
            if self.mv_questions > MAX_SPF_QUERIES:
                raise spf.PermError(f"more than {MAX_SPF_QUERIES} DNS lookups")
            if time.monotonic() > self.mv_deadline:
                raise spf.TempError("SPF evaluation ran out of time")
            try:
                result = _answer(self.mv_resolver, name, qtype)
            except DnsTemporaryError as exc:
                raise spf.TempError(f"DNS {qtype} lookup failed") from exc
            if result:
                self.cache[key] = result
            elif not ignore_void:
                self.void_lookups += 1
                if self.void_lookups > spf.MAX_VOID_LOOKUPS:
                    raise spf.PermError(f"void lookup limit of {spf.MAX_VOID_LOOKUPS} exceeded")
            return result

    return ResolverQuery


def spf_identity(mail_from: str, helo: str) -> tuple[str, str]:
    """(sender for pyspf, domain checked): MAIL FROM, or postmaster@HELO for the null sender."""
    sender = mail_from.strip().strip("<>").strip()
    if not sender:
        domain = normalise_domain(helo) or ""
        return (f"postmaster@{domain}" if domain else "", domain)
    local, at, raw_domain = sender.rpartition("@")
    checked = normalise_domain(raw_domain) if at else None
    if not checked:
        return ("", "")
    # A local part pyspf would split differently (it splits at the first "@") is not needed:
    # it only feeds the %{l} macro.
    if not local or "@" in local:
        local = "postmaster"
    return (f"{local}@{checked}", checked)


def check_spf(
    *, client_ip: str, mail_from: str, helo: str, resolver: Resolver, deadline: float
) -> tuple[str, str]:
    """(result, domain checked). Never raises: any failure inside pyspf is a permerror."""
    sender, domain = spf_identity(mail_from, helo)
    if not domain:
        return ("none", domain)
    try:
        query = _query_class()(
            resolver, deadline, i=client_ip, s=sender, h=helo or domain, strict=True
        )
        result, _code, _explanation = query.check()
    except Exception:
        # Hostile input reaches code paths in pyspf that raise (bad IP text, recursion).
        return ("permerror", domain)
    result = str(result).lower()
    return (result if result in SPF_RESULTS else "permerror", domain)


__all__ = ["MAX_SPF_QUERIES", "SPF_RESULTS", "check_spf", "spf_identity"]
