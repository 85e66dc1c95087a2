"""Who really sent a message: SPF, DKIM and DMARC alignment with the From domain.

``check_sender`` gathers the evidence once per message; two predicates turn it into the
relay's decisions:

* ``sender_matches_principal``: a seller who sends from its own mail servers (no SMTP AUTH)
  is recognised when the From address is one of its sending addresses or on one of its
  sending domains, and that domain is authenticated by an aligned SPF pass, or an aligned
  DKIM pass whose signature names the address the mail arrived at (``rcpt``: a signed
  message replayed by someone else to another address does not speak for its signer);
* ``customer_sender_ok``: a reply to a reverse alias is accepted only when its From domain is
  the customer's real address's domain, aligned-authenticated (no spoofing a customer into a
  seller's inbox).

Nothing here raises on hostile input: a missing, repeated or unreadable From, damaged
signatures or records all come out as none/fail/permerror, and the work is bounded (see
``dkim_verify`` for the DKIM caps and ``spf_check`` for SPF's). ``SenderAuth`` holds domains,
never an address, so it may be logged.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from mailveil.config import Settings, nameservers
from mailveil.relay.dkim_verify import MAX_DKIM_SIGNATURES, DkimResult, verify_dkim
from mailveil.relay.dmarc import (
    DmarcRecord,
    aligned,
    in_same_branch,
    lookup_dmarc,
    normalise_domain,
)
from mailveil.relay.dns import DnsResolver, DnsTemporaryError, Resolver, StaticResolver
from mailveil.relay.spf_check import check_spf, spf_identity

DEFAULT_TIMEOUT = 10.0
MAX_FROM_BYTES = 2048
_FROM_FIELD = re.compile(rb"^from[ \t]*:", re.IGNORECASE)
_RESENT_FROM_FIELD = re.compile(rb"^resent-from[ \t]*:", re.IGNORECASE)


@dataclass(frozen=True)
class SenderAuth:
    """The evidence about one message's sender.

    ``spf``: pass, fail, softfail, neutral, none, temperror or permerror, for ``spf_domain``
    (the MAIL FROM domain, or the HELO name for the null sender).
    ``dkim``: one ``DkimResult(domain, selector, result)`` per verified signature.
    ``from_domain``: the RFC 5322 From domain; None when From is missing, repeated, lists
    several mailboxes or cannot be read.
    ``dmarc_policy``: the published p= (or sp=), None without a record.
    ``aligned``: an SPF or DKIM pass aligned with the From domain (relaxed unless the record
    asks for strict), whether or not a DMARC record exists.
    ``dmarc_result``: pass or fail when a record exists, none without one, temperror when
    DNS did not answer; fail whenever there is no usable From.
    """

    spf: str
    spf_domain: str
    dkim: list[DkimResult]
    from_domain: str | None
    dmarc_policy: str | None
    aligned: bool
    dmarc_result: str
    spf_aligned: bool = False
    dkim_aligned_domains: tuple[str, ...] = ()
    dkim_skipped: int = 0
    notes: tuple[str, ...] = field(default=())
    # Checked against the address the mail arrived at (``check_sender(rcpt=...)``): the aligned
    # DKIM passes whose signed To/Cc name it. Only these bind the signer to this delivery.
    rcpt_checked: bool = False
    dkim_rcpt_domains: tuple[str, ...] = ()

    @property
    def dkim_bound_domains(self) -> tuple[str, ...]:
        """Aligned DKIM passes that speak for this delivery (all of them when the recipient
        was not checked)."""
        return self.dkim_rcpt_domains if self.rcpt_checked else self.dkim_aligned_domains

    @property
    def aligned_identities(self) -> tuple[str, ...]:
        """Domains whose pass counted towards alignment (SPF's first, then DKIM d=)."""
        spf = (self.spf_domain,) if self.spf_aligned else ()
        return spf + self.dkim_aligned_domains

    @property
    def temporary_failure(self) -> bool:
        """Not aligned, but a DNS answer was missing: answer 4xx and let the sender retry."""
        if self.aligned:
            return False
        return (
            self.spf == "temperror"
            or self.dmarc_result == "temperror"
            or any(r.result == "temperror" for r in self.dkim)
        )


def _from_fields(message: bytes, field: re.Pattern[bytes] = _FROM_FIELD) -> list[bytes]:
    """The raw (unfolded) values of every From (or ``field``) field in the header section."""
    end = re.search(rb"\n\r?\n", message)
    head = message[: end.start()] if end else message
    values: list[bytes] = []
    current: bytearray | None = None
    for line in re.split(rb"\r?\n", head):
        if not line:
            break  # end of the header section
        if line[:1] in (b" ", b"\t"):
            if current is not None and len(current) <= MAX_FROM_BYTES:
                current += line
            continue
        if current is not None:
            values.append(bytes(current))
            current = None
        match = field.match(line)
        if match:
            current = bytearray(line[match.end() :])
    if current is not None:
        values.append(bytes(current))
    return values


def parse_mailbox(text: str) -> tuple[str, str] | None:
    """(lower-cased address, normalised domain) of a text naming exactly one mailbox."""
    if len(text) > MAX_FROM_BYTES:
        return None
    pairs = email.utils.getaddresses([text])
    if len(pairs) != 1:
        return None
    address = pairs[0][1].strip()
    local, at, raw_domain = address.rpartition("@")
    domain = normalise_domain(raw_domain) if at else None
    if not local or domain is None:
        return None
    return (f"{local.lower()}@{domain}", domain)


def from_mailbox_of(message: bytes) -> tuple[str, str] | None:
    """(address, domain) when the message has exactly one From naming exactly one mailbox:
    the same reading ``check_sender`` aligns with."""
    fields = _from_fields(message)
    if len(fields) != 1 or len(fields[0]) > MAX_FROM_BYTES:
        return None
    return parse_mailbox(fields[0].decode("utf-8", "replace"))


def resent_from_mailbox_of(message: bytes) -> tuple[str, str] | None:
    """(address, domain) of a redirected message's one Resent-From (RFC 5322 3.6.6): who
    sent it on, when it was sent on unchanged."""
    fields = _from_fields(message, _RESENT_FROM_FIELD)
    if len(fields) != 1 or len(fields[0]) > MAX_FROM_BYTES:
        return None
    return parse_mailbox(fields[0].decode("utf-8", "replace"))


def aligned_with(auth: SenderAuth, domain: str) -> bool:
    """An SPF pass, or a DKIM pass naming the recipient, aligned (relaxed) with ``domain``:
    DMARC's test, for an identity other than From (a redirect's Resent-From)."""
    if auth.spf == "pass" and aligned(auth.spf_domain, domain):
        return True
    return any(
        r.result == "pass" and r.coverage in ("rcpt", "") and aligned(r.domain, domain)
        for r in auth.dkim
    )


def from_domain_of(message: bytes) -> str | None:
    """The From domain when the message has exactly one From naming exactly one mailbox."""
    parsed = from_mailbox_of(message)
    return parsed[1] if parsed else None


def check_sender(
    message: bytes,
    *,
    mail_from: str,
    client_ip: str,
    helo: str,
    resolver: Resolver,
    timeout: float = DEFAULT_TIMEOUT,
    max_dkim_signatures: int = MAX_DKIM_SIGNATURES,
    rcpt: str | None = None,
) -> SenderAuth:
    """SPF for the envelope, DKIM for the signatures, DMARC alignment for the From domain.

    ``timeout`` bounds the DNS work of the whole check (a lookup after it is a temperror).
    ``rcpt``: the address the mail arrived at; each DKIM result then says whether its
    signature names it (``DkimResult.coverage``).
    """
    deadline = time.monotonic() + timeout
    notes: list[str] = []
    spf_result, spf_domain = check_spf(
        client_ip=client_ip, mail_from=mail_from, helo=helo, resolver=resolver, deadline=deadline
    )
    dkim_results, skipped = verify_dkim(
        message,
        resolver=resolver,
        deadline=deadline,
        max_signatures=max_dkim_signatures,
        rcpt=rcpt,
    )
    if skipped:
        notes.append(f"{skipped} DKIM signatures beyond the first {max_dkim_signatures} ignored")

    from_domain = from_domain_of(message)
    if from_domain is None:
        notes.append("no single readable From mailbox")
        return SenderAuth(
            spf_result, spf_domain, dkim_results, None, None, False, "fail",
            dkim_skipped=skipped, notes=tuple(notes), rcpt_checked=rcpt is not None,
        )  # fmt: skip

    record: DmarcRecord | None = None
    dmarc_temporary = False
    try:
        record = lookup_dmarc(resolver, from_domain)
    except DnsTemporaryError:
        dmarc_temporary = True
    except Exception:
        notes.append("DMARC lookup failed")
    aspf = record.aspf if record else "r"
    adkim = record.adkim if record else "r"
    spf_aligned = spf_result == "pass" and aligned(spf_domain, from_domain, aspf)
    dkim_aligned = tuple(
        dict.fromkeys(
            r.domain
            for r in dkim_results
            if r.result == "pass" and aligned(r.domain, from_domain, adkim)
        )
    )
    dkim_rcpt = tuple(
        dict.fromkeys(
            r.domain
            for r in dkim_results
            if r.domain in dkim_aligned and r.result == "pass" and r.coverage == "rcpt"
        )
    )
    is_aligned = spf_aligned or bool(dkim_aligned)
    if record is not None:
        result = "pass" if is_aligned else "fail"
    elif dmarc_temporary:
        result = "temperror"
    else:
        result = "none"
    return SenderAuth(
        spf=spf_result,
        spf_domain=spf_domain,
        dkim=dkim_results,
        from_domain=from_domain,
        dmarc_policy=record.policy_for(from_domain) if record else None,
        aligned=is_aligned,
        dmarc_result=result,
        spf_aligned=spf_aligned,
        dkim_aligned_domains=dkim_aligned,
        dkim_skipped=skipped,
        notes=tuple(notes),
        rcpt_checked=rcpt is not None,
        dkim_rcpt_domains=dkim_rcpt,
    )


def _addresses(values: Iterable[str]) -> set[str]:
    out = set()
    for value in values:
        parsed = parse_mailbox(value)
        if parsed:
            out.add(parsed[0])
    return out


def _domains(values: Iterable[str]) -> set[str]:
    return {d for d in (normalise_domain(v) for v in values) if d}


def sender_matches_principal(
    auth: SenderAuth,
    *,
    sending_addresses: list[str],
    sending_domains: list[str],
    envelope_from: str,
    header_from: str,
) -> bool:
    """True when the From mailbox is the principal's (one of its addresses, or on one of its
    domains, exactly) and that domain is aligned-authenticated.

    Two checks go beyond DMARC's relaxed alignment, because recognising a principal lets it
    write to customers:

    * the pass that counts must come from the From domain itself or its own DNS branch
      (a parent or subdomain): a sibling under a shared parent that is missing from the
      Public Suffix List (``tenant-a.mailhost.example`` vs ``tenant-b.mailhost.example``)
      does not vouch for the other;
    * an SPF pass only counts for the envelope it was computed for (``envelope_from``);
    * a DKIM pass only counts when its signature names the address the mail arrived at
      (when the check was given it): otherwise it may be the principal's mail to someone
      else, replayed.
    """
    parsed = parse_mailbox(header_from)
    if parsed is None or not auth.aligned:
        return False
    address, domain = parsed
    if auth.from_domain != domain:
        return False
    if address not in _addresses(sending_addresses) and domain not in _domains(sending_domains):
        return False
    identities = list(auth.dkim_bound_domains)
    if auth.spf_aligned and spf_identity(envelope_from, auth.spf_domain)[1] == auth.spf_domain:
        identities.append(auth.spf_domain)
    return any(in_same_branch(identity, domain) for identity in identities)


def resolver_for(settings: Settings) -> DnsResolver:
    """The resolver the operator named (``dns_nameservers``, ``dns_timeout_seconds``), or the
    system's when none is named."""
    ips, port = nameservers(settings.dns_nameservers)
    return DnsResolver(timeout=settings.dns_timeout_seconds, nameservers=ips or None, port=port)


def describe_temporary(auth: SenderAuth) -> str:
    """Which DNS answers were missing, in words naming domains only (for a pending report's
    reason and the logs)."""
    missing = []
    if auth.spf == "temperror":
        missing.append(f"SPF for {auth.spf_domain or 'the envelope'}")
    missing += [f"the DKIM key of {r.domain or '?'}" for r in auth.dkim if r.result == "temperror"]
    if auth.dmarc_result == "temperror":
        missing.append(f"DMARC for {auth.from_domain}")
    return "DNS did not answer for " + (", ".join(missing) or "the sender")


def customer_sender_ok(auth: SenderAuth, real_address_domain: str) -> bool:
    """A reply really from the customer's domain: same From domain, aligned-authenticated.

    This is domain-level evidence, as DMARC is: another mailbox on the same domain whose
    provider lets it write any From would pass too.
    """
    expected = normalise_domain(real_address_domain)
    return expected is not None and auth.from_domain == expected and auth.aligned


__all__ = [
    "DkimResult",
    "DnsResolver",
    "DnsTemporaryError",
    "Resolver",
    "SenderAuth",
    "StaticResolver",
    "aligned_with",
    "check_sender",
    "customer_sender_ok",
    "describe_temporary",
    "from_domain_of",
    "from_mailbox_of",
    "parse_mailbox",
    "resent_from_mailbox_of",
    "resolver_for",
    "sender_matches_principal",
]
