"""DNS lookups for sender authentication (SPF, DKIM keys, DMARC), behind one small protocol.

``check_sender`` never talks to DNS itself: it asks a ``Resolver``. Production passes a
``DnsResolver`` (dnspython, short timeouts); tests and benchmarks pass a ``StaticResolver``
built from a dict, so no test leaves the machine.

Conventions every resolver follows:

* names are looked up as given, lower-cased, without a trailing dot;
* "no such name" and "no records of that type" both return an empty list (SPF and DMARC treat
  them alike);
* a timeout, SERVFAIL or unreachable server raises ``DnsTemporaryError`` (an SPF, DKIM or
  DMARC *temperror*, which the relay answers with a 4xx so the sender retries);
* a TXT record is returned as one string: its character-strings concatenated, bytes decoded
  as UTF-8 with ``surrogateescape`` so the exact bytes survive the round trip.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

RTYPES = ("TXT", "A", "AAAA", "MX", "PTR")


class DnsTemporaryError(Exception):
    """The answer could not be had now (timeout, SERVFAIL, no server): try again later."""


class Resolver(Protocol):
    def txt(self, name: str) -> list[str]: ...

    def a(self, name: str) -> list[str]: ...

    def aaaa(self, name: str) -> list[str]: ...

    def mx(self, name: str) -> list[tuple[int, str]]: ...

    def ptr(self, name: str) -> list[str]: ...


def normalise_name(name: str) -> str:
    return name.strip().rstrip(".").lower()


def decode_txt(strings: Iterable[bytes]) -> str:
    return b"".join(strings).decode("utf-8", "surrogateescape")


def encode_txt(value: str) -> bytes:
    return value.encode("utf-8", "surrogateescape")


@dataclass
class StaticResolver:
    """Answers from a dict ``{(name, rtype): [values]}``; for tests and benchmarks.

    ``rtype`` is one of TXT, A, AAAA, MX, PTR. MX values are ``"<preference> <exchange>"``.
    Names in ``failing`` (as ``(name, rtype)``) raise ``DnsTemporaryError``. Every question is
    appended to ``queries`` so tests can check that lookups stay bounded.
    """

    records: Mapping[tuple[str, str], list[str]]
    failing: Iterable[tuple[str, str]] = ()
    queries: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        table: dict[tuple[str, str], list[str]] = {}
        for (name, rtype), values in self.records.items():
            key = (normalise_name(name), rtype.upper())
            if key[1] not in RTYPES:
                raise ValueError(f"unsupported record type {rtype!r}")
            table.setdefault(key, []).extend(values)
        self._table = table
        self._failing = {(normalise_name(n), t.upper()) for n, t in self.failing}

    def add(self, name: str, rtype: str, value: str) -> None:
        """One more record (a test adding a domain to a running relay)."""
        self._table.setdefault((normalise_name(name), rtype.upper()), []).append(value)

    def _get(self, name: str, rtype: str) -> list[str]:
        key = (normalise_name(name), rtype)
        self.queries.append(key)
        if key in self._failing:
            raise DnsTemporaryError(f"{rtype} lookup failed")
        return list(self._table.get(key, ()))

    def txt(self, name: str) -> list[str]:
        return self._get(name, "TXT")

    def a(self, name: str) -> list[str]:
        return self._get(name, "A")

    def aaaa(self, name: str) -> list[str]:
        return self._get(name, "AAAA")

    def mx(self, name: str) -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        for value in self._get(name, "MX"):
            pref, _, host = value.strip().partition(" ")
            out.append((int(pref), normalise_name(host)))
        return out

    def ptr(self, name: str) -> list[str]:
        return [normalise_name(v) for v in self._get(name, "PTR")]


class DnsResolver:
    """Real DNS through dnspython, each question bounded by ``timeout`` seconds.

    ``nameservers`` (and ``port``) override /etc/resolv.conf; the system configuration is read
    when the resolver is built, not at import.
    """

    def __init__(
        self, *, timeout: float = 3.0, nameservers: list[str] | None = None, port: int = 53
    ) -> None:
        import dns.resolver

        resolver = dns.resolver.Resolver(configure=nameservers is None)
        if nameservers is not None:
            resolver.nameservers = list(nameservers)
            resolver.port = port
        resolver.lifetime = timeout
        resolver.timeout = timeout
        # EDNS0 so a 2048-bit DKIM key record fits one UDP answer (dnspython retries over TCP
        # on truncation either way).
        resolver.use_edns(0, 0, 1232)
        # Same name asked twice in one check (SPF include chains) should not cost twice.
        resolver.cache = dns.resolver.LRUCache(4096)
        self._resolver = resolver

    def _answer(self, name: str, rtype: str) -> list[object]:
        import dns.exception
        import dns.name
        import dns.resolver

        name = normalise_name(name)
        if not name:
            return []
        try:
            answer = self._resolver.resolve(name, rtype, search=False, raise_on_no_answer=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.name.LabelTooLong, dns.name.EmptyLabel, dns.name.NameTooLong):
            # A name that cannot exist has no records.
            return []
        except (dns.resolver.NoNameservers, dns.resolver.LifetimeTimeout) as exc:
            raise DnsTemporaryError(f"{rtype} lookup failed: {type(exc).__name__}") from exc
        except dns.exception.DNSException as exc:
            raise DnsTemporaryError(f"{rtype} lookup failed: {type(exc).__name__}") from exc
        return list(answer.rrset or ())

    def txt(self, name: str) -> list[str]:
        return [decode_txt(r.strings) for r in self._answer(name, "TXT")]  # type: ignore[attr-defined]

    def a(self, name: str) -> list[str]:
        return [str(r.address) for r in self._answer(name, "A")]  # type: ignore[attr-defined]

    def aaaa(self, name: str) -> list[str]:
        return [str(r.address) for r in self._answer(name, "AAAA")]  # type: ignore[attr-defined]

    def mx(self, name: str) -> list[tuple[int, str]]:
        return [
            (int(r.preference), normalise_name(r.exchange.to_text()))  # type: ignore[attr-defined]
            for r in self._answer(name, "MX")
        ]

    def ptr(self, name: str) -> list[str]:
        return [normalise_name(r.target.to_text()) for r in self._answer(name, "PTR")]  # type: ignore[attr-defined]


__all__ = [
    "DnsResolver",
    "DnsTemporaryError",
    "Resolver",
    "StaticResolver",
    "decode_txt",
    "encode_txt",
    "normalise_name",
]
