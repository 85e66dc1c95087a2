"""The adversary of ``leak_scenarios.py`` (a helper: ``run_all`` skips ``_*.py``): in every
scenario, attempts to get innocent sellers accused, through the relay's own code.

Targets: up to ``TARGETS`` sellers that leak nothing in the scenario, each with a sending
domain that publishes SPF (``-all``, ``~all`` or ``?all``, or none) and a DKIM key. Each
writes ordinary mail through the relay to a few of its customers (``decide.decide``:
rewritten, DKIM-signed by the relay, a relay_messages row and a ``message`` entry), which is
the framers' material. The attempts, by kind:

``forged_sender``
    The buyer of a real leak mails the leaked aliases with an innocent seller's address in
    From (and the envelope, or the null sender, or its own), from its own servers: SPF
    fail, softfail, neutral or none for the innocent domain; no DKIM.
``dkim_replay``
    The buyer replays a genuine DKIM-signed message of an innocent seller to the leaked
    aliases: the signature verifies and is aligned, but does not sign To, or signs another
    recipient.
``customer_replay``
    A customer sends their copy of the innocent's relayed mail back to the alias in its To:
    from outside, exact or with the body changed.
``lone_customer``
    A customer writes fresh mail from a throwaway domain to their own alias of the innocent
    (one framer per innocent: colluding customers are the residual risk the design states).
``complaint``
    Customers report the innocent's relayed mail in every shape (``report_shapes``), by the
    abuse mailbox (authenticated) or the API.
``forged_real_spam``
    Customers report spam to their real addresses whose From claims the innocent seller.

Every stranger message goes through ``decide.decide`` (and so ``strangers``) with a
resolver serving the scenario's DNS, so sender checks, DKIM coverage and relay-copy
recognition are the relay's own; reports go through ``submit_report``.
"""

from __future__ import annotations

import email.policy
import email.utils
import sys
from collections import Counter
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import dkim
from rich.console import Console
from rich.table import Table
from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from mailveil.contacts.models import Alias, Principal
from mailveil.demo.harness import SigningDomain
from mailveil.detect.reports import MailboxAuth, submit_report
from mailveil.relay.context import RelayContext
from mailveil.relay.decide import decide
from mailveil.relay.decision import KIND_STRANGER, Deliver, Hold
from mailveil.relay.identity import Sender
from mailveil.relay.models import RelayMessage
from mailveil.relay.sender_auth import StaticResolver
from mailveil.runtime import Runtime

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "relay"))
from report_shapes import SHAPES, as_delivered, report_of

from _leak_world import CLOCK, World, route_of

KINDS = (
    "forged_sender",
    "dkim_replay",
    "customer_replay",
    "lone_customer",
    "complaint",
    "forged_real_spam",
)
TARGETS = 4
SPF_ENDINGS = ("-all", "~all", "?all", None)  # the innocent domain's SPF, by target
FRAMER_IP = "198.51.100.77"  # the buyers' and framers' servers: in no innocent's SPF
SELECTOR = "k1"
ABUSE = "report-abuse@relay.shop.example"


@dataclass
class Target:
    principal_id: int
    domain: str
    key: bytes  # DKIM private key (PEM)
    copies: list[tuple[int, str, bytes]] = field(default_factory=list)  # customer, alias, copy


@dataclass
class Framer:
    w: World
    ctx: RelayContext
    targets: list[Target]
    attempts: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    done: set[str] = field(default_factory=set)

    @property
    def innocent(self) -> set[int]:
        return {t.principal_id for t in self.targets}

    def summary(self) -> dict[str, Any]:
        return {
            "attempts": dict(self.attempts),
            "report_outcomes": dict(self.outcomes),
            "targets": sorted(self.innocent),
        }


def build(w: World, guilty: set[int]) -> Framer:
    """Pick the innocent targets, publish their DNS, and a relay context for the world."""
    records: dict[tuple[str, str], list[str]] = {}
    targets: list[Target] = []
    with Session(w.engine) as s:
        rows = s.execute(
            select(Principal.id, Principal.attributes).where(Principal.kind == "seller")
        ).all()
    for pid, attrs in rows:
        domains = list((attrs or {}).get("sending_domains") or [])
        if pid in guilty or pid == w.shady or not domains or len(targets) >= TARGETS:
            continue
        domain = domains[0]
        key = SigningDomain.make(domain)  # a fresh RSA key, as the demo's outside domains
        pem, public = key.pem, key.public_b64
        ending = SPF_ENDINGS[len(targets) % len(SPF_ENDINGS)]
        if ending is not None:
            records[(domain, "TXT")] = [f"v=spf1 ip4:192.0.2.0/24 {ending}"]
        records[(f"{SELECTOR}._domainkey.{domain}", "TXT")] = [f"v=DKIM1; k=rsa; p={public}"]
        targets.append(Target(pid, domain, pem))
    # The buyers' and framers' own domains pass SPF from their servers.
    for name in ("offers", "throwaway"):
        records[(f"{name}{w.seed}.example", "TXT")] = [f"v=spf1 ip4:{FRAMER_IP} -all"]
    runtime = Runtime(w.settings, w.engine, sessionmaker(w.engine), w.vault, w.policy, w.ledger)
    ctx = RelayContext.load(runtime, resolver=StaticResolver(records))
    for name, value in ctx.dkim.dns_records().items():  # the relay's own keys, published
        records[(name, "TXT")] = [value]
    ctx = RelayContext.load(runtime, resolver=StaticResolver(records))
    return Framer(w, ctx, targets)


def _message(from_: str, to: str, subject: str, day: int, body: str = "Hello,\n") -> bytes:
    msg = EmailMessage()
    msg["From"] = from_
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = email.utils.format_datetime(CLOCK.now())
    msg["Message-ID"] = email.utils.make_msgid(domain=f"d{day}.example")
    msg.set_content(body)
    return msg.as_bytes(policy=email.policy.SMTP)


def relayed(s: Session, f: Framer, target: Target, alias: Alias, day: int) -> bytes | None:
    """The innocent's ordinary mail to one customer through the relay's own code; the copy
    the customer's mailbox keeps (None when policy refuses it)."""
    route = route_of(s, alias)
    address = f"sales@{target.domain}"
    sender = Sender(address, "192.0.2.10", f"mx.{target.domain}", target.principal_id)
    raw = _message(address, alias.address, "[shipping] Your parcel", day, "On its way.\n")
    decision = decide(s, f.ctx, route, sender, raw)
    if not isinstance(decision, Deliver):
        return None
    out = decision.outgoing
    s.execute(insert(RelayMessage), [{**out.row, "status": "delivered"}])
    f.w.ledger.append(s, [out.event])
    return as_delivered(out.mail_from, out.data)


def stranger(s: Session, f: Framer, alias: Alias, raw: bytes, mail_from: str) -> bool:
    """A stranger's message to ``alias`` as the relay decides it (quarantined, its entry in
    the ledger); False if the relay took it for the alias's principal's own."""
    route = route_of(s, alias)
    sender = Sender(mail_from, FRAMER_IP, "mx.framer.example")
    held = decide(s, f.ctx, route, sender, raw)
    if not isinstance(held, Hold):
        return False
    assert held.event.kind == KIND_STRANGER
    f.w.ledger.append(s, [held.event])
    return True


def _signed(target: Target, raw: bytes, headers: list[bytes]) -> bytes:
    domain = target.domain.encode()
    return dkim.sign(raw, SELECTOR.encode(), domain, target.key, include_headers=headers) + raw


def _report(s: Session, f: Framer, customer: int, raw: bytes, channel: str) -> None:
    common: dict[str, Any] = {
        "settings": f.w.settings, "ledger": f.w.ledger, "vault": f.w.vault, "raw": raw,
        "verp_key": f.ctx.verp_key,
    }  # fmt: skip
    if channel == "mailbox":
        auth = MailboxAuth(header_from=f.w.emails[customer], dmarc_pass=True)
        out = submit_report(s, channel="mailbox", mailbox=auth, **common)
    else:
        out = submit_report(s, channel="api", reporter_customer_id=customer, **common)
    f.outcomes[out.outcome] += 1


def prepare(s: Session, f: Framer, day: int) -> None:
    """Each target writes ordinary mail to six of its customers (the framers' material)."""
    CLOCK.set(day, 11)
    for target in f.targets:
        aliases = s.scalars(
            select(Alias).where(Alias.principal_id == target.principal_id).order_by(Alias.id)
        ).all()
        for alias in aliases:
            if len(target.copies) >= 6:
                break
            copy = relayed(s, f, target, alias, day)
            if copy is not None:
                target.copies.append((alias.customer_id, alias.address, copy))


def customers_act(s: Session, f: Framer, day: int) -> None:
    """Replays, a lone customer's fresh mail, complaints in every shape, forged spam."""
    rng = f.w.rng
    CLOCK.set(day, 15)
    for t, target in enumerate(f.targets):
        for n, (customer, address, copy) in enumerate(target.copies):
            alias = s.scalar(select(Alias).where(Alias.address == address))
            assert alias is not None
            if n < 2:  # the copy sent back to its alias, exact and altered
                data = copy if n == 0 else copy.replace(b"On its way", b"A prize!!")
                if stranger(s, f, alias, data, f"me@throwaway{f.w.seed}.example"):
                    f.attempts["customer_replay"] += 1
            elif n == 2:  # one lone customer per innocent, from a throwaway domain
                sender = f"me@throwaway{f.w.seed}.example"
                raw = _message(sender, address, "You are a disgrace", day)
                if stranger(s, f, alias, raw, sender):
                    f.attempts["lone_customer"] += 1
            for shape_no in range(3):  # complaints: every shape, both channels, over targets
                shape = SHAPES[(t * 6 * 3 + n * 3 + shape_no) % len(SHAPES)]
                channel = "mailbox" if (n + shape_no) % 2 else "api"
                raw = report_of(shape, copy, reporter=f.w.emails[customer], abuse=ABUSE)
                _report(s, f, customer, raw, channel)
                f.attempts["complaint"] += 1
    # Spam to real addresses claiming the first innocent's From, reported by a dozen.
    target = f.targets[0]
    for customer in [int(c) for c in rng.choice(f.w.customers, 12, replace=False)]:
        spam = _message(f"Deals <sales@{target.domain}>", f.w.emails[customer], "Sale", day)
        raw = report_of("rfc822", spam, reporter=f.w.emails[customer], abuse=ABUSE)
        _report(s, f, customer, raw, "api")
        f.attempts["forged_real_spam"] += 1


def buyers_forge(s: Session, f: Framer, leaked: list[str], day: int) -> None:
    """The buyers of real leaks mail the leaked aliases in the innocents' names."""
    rng = f.w.rng
    CLOCK.set(day, 16)
    picked = [leaked[int(i)] for i in rng.choice(len(leaked), min(len(leaked), 40), replace=False)]
    for n, address in enumerate(picked):
        alias = s.scalar(select(Alias).where(Alias.address == address))
        if alias is None or alias.principal_id in f.innocent:
            continue
        target = f.targets[n % len(f.targets)]
        own = f"offers@offers{f.w.seed}.example"
        if n % 2 == 0:
            claimed = f"sales@{target.domain}"
            envelope = (claimed, "", own)[n // 2 % 3]
            raw = _message(f"Shop <{claimed}>", address, "Catalogue", day)
            if stranger(s, f, alias, raw, envelope):
                f.attempts["forged_sender"] += 1
        else:
            # The innocent's genuine signed mail to someone else, replayed unchanged.
            other = f"customer{n}@elsewhere.example"
            raw = _message(f"sales@{target.domain}", other, "Your order", day)
            headers = [b"from", b"subject", b"date"] if n % 4 == 1 else [b"from", b"to", b"date"]
            if stranger(s, f, alias, _signed(target, raw, headers), own):
                f.attempts["dkim_replay"] += 1


def act(s: Session, f: Framer, day: int, days: int, leaked: list[str]) -> None:
    """The adversary's day: material on day 20, customers from day 24, buyers at the end."""
    if not f.targets:
        return
    if day == 20 and "prepare" not in f.done:
        prepare(s, f, day)
        f.done.add("prepare")
    elif day == 24 and "customers" not in f.done:
        customers_act(s, f, day)
        f.done.add("customers")
    elif day == days - 2 and leaked and "buyers" not in f.done:
        buyers_forge(s, f, leaked, day)
        f.done.add("buyers")


def summarise(console: Console, results: list[dict[str, Any]]) -> bool:
    """Print the attempts by kind and what became of them; whether the adversary ran."""
    framed = [r for r in results if r.get("framing")]
    if not framed:
        return False
    t = Table(title="Framing attempts against innocent sellers (all scenarios)")
    for col in ("kind", "attempts", "scenarios with it"):
        t.add_column(col)
    for kind in KINDS:
        n = [r["framing"]["attempts"].get(kind, 0) for r in framed]
        t.add_row(kind, str(sum(n)), f"{sum(1 for x in n if x)}/{len(framed)}")
    console.print(t)
    hit = [(r["seed"], p) for r in framed for p in r["framed_named"]]
    outcomes: Counter[str] = Counter()
    for r in framed:
        outcomes.update(r["framing"]["report_outcomes"])
    console.print(
        f"  framed targets: {sum(len(r['framing']['targets']) for r in framed)} innocent "
        f"sellers; named as culprits: {len(hit)} {hit[:6]}; their reports' outcomes: "
        f"{dict(outcomes)}"
    )
    return True


__all__ = ["KINDS", "Framer", "act", "build", "summarise"]
