"""Building messages that hide an address, byte by byte, for the privacy tests through the
relay: MIME leaves in any transfer encoding, HTML tricks, calendar and vCard folding, OpenPGP
packets, signed parts; and the marketplace rows for extra customers (a Gmail user, an IDN
domain) the shared world does not have.
"""

from __future__ import annotations

import base64
import quopri
import secrets
import struct
from dataclasses import dataclass

from relay_server_kit import SELLER_ADDRESS, Relay

import world_kit as worlds
from mailveil.db.base import utcnow

CRLF = "\r\n"


def leaf(
    ctype: str,
    body: str | bytes,
    *,
    cte: str = "8bit",
    charset: str | None = "utf-8",
    headers: str = "",
) -> bytes:
    """One MIME leaf (its header section and body), ``body`` transfer-encoded as ``cte``."""
    if isinstance(body, str):
        data = body.replace("\r\n", "\n").replace("\n", "\r\n").encode(charset or "utf-8")
    else:
        data = body
    if cte == "base64":
        payload = base64.encodebytes(data).replace(b"\n", b"\r\n")
    elif cte == "quoted-printable":
        payload = quopri.encodestring(data.replace(b"\r\n", b"\n")).replace(b"\n", b"\r\n")
    else:
        payload = data + b"\r\n"
    params = f"; charset={charset}" if charset else ""
    head = f"Content-Type: {ctype}{params}\r\n{headers}Content-Transfer-Encoding: {cte}\r\n\r\n"
    return head.encode() + payload


def multipart(subtype: str, *children: bytes, params: str = "") -> bytes:
    boundary = f"=_b{secrets.token_hex(6)}"
    body = b"".join(f"--{boundary}\r\n".encode() + child + b"\r\n" for child in children)
    head = f'Content-Type: multipart/{subtype}; boundary="{boundary}"{params}\r\n\r\n'
    return head.encode() + body + f"--{boundary}--\r\n".encode()


def rfc822(inner: bytes) -> bytes:
    return b"Content-Type: message/rfc822\r\n\r\n" + inner


def top(from_: str, to: str, subject: str, entity: bytes, headers: str = "") -> bytes:
    """A whole message: ``entity`` (a leaf or multipart from above) with the top fields."""
    fields = (
        f"From: {from_}\r\nTo: {to}\r\nSubject: {subject}\r\n"
        "Date: Tue, 01 Oct 2024 10:00:00 +0200\r\nMessage-ID: <orig-1@client.example>\r\n"
        f"MIME-Version: 1.0\r\n{headers}"
    )
    return fields.encode() + entity


def folded(line: str, at: int) -> str:
    """An iCalendar/vCard content line folded (CRLF + space) at character ``at``."""
    at = max(1, min(at, len(line) - 1))
    return line[:at] + "\r\n " + line[at:]


def _packet(tag: int, body: bytes) -> bytes:
    # New-format OpenPGP packet header (RFC 9580 4.2.1), five-octet length.
    return bytes([0xC0 | tag, 0xFF]) + struct.pack(">I", len(body)) + body


def pgp_armor(kind: str, packets: bytes) -> str:
    lines = base64.b64encode(packets).decode()
    wrapped = "\n".join(lines[i : i + 64] for i in range(0, len(lines), 64))
    return f"-----BEGIN PGP {kind}-----\n\n{wrapped}\n=AAAA\n-----END PGP {kind}-----\n"


def pgp_public_key(user_id: str) -> str:
    """An armored transferable public key shape: a key packet and a User ID packet naming
    ``user_id`` (what an address book or a key server shows of the key)."""
    key = _packet(6, b"\x04" + struct.pack(">I", 1_700_000_000) + b"\x16" + secrets.token_bytes(40))
    return pgp_armor("PUBLIC KEY BLOCK", key + _packet(13, user_id.encode()))


def pgp_signature(user_id: str) -> str:
    """An armored signature whose hashed area carries a Signer's User ID subpacket (type 28)."""
    sub = bytes([len(user_id) + 2, 28, 0]) + user_id.encode()[: len(user_id)]
    body = b"\x04\x00\x16\x08" + struct.pack(">H", len(sub)) + sub + b"\x00\x00" + b"\x00" * 66
    return pgp_armor("SIGNATURE", _packet(2, body))


@dataclass(frozen=True)
class Customer:
    name: str
    real: str
    alias: str
    reverse: str


def add_customer(relay: Relay, name: str, address: str) -> Customer:
    """A customer with a shipped order from the seller ``acme`` and a disclosed alias, and SPF
    for its domain passing from loopback (so it can write through the relay)."""
    runtime, world = relay.runtime, relay.world
    domain = address.rpartition("@")[2].encode("idna").decode("ascii")
    if not relay.resolver.txt(domain):  # two SPF records would be a permerror
        relay.resolver.add(domain, "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    with relay.session_factory() as session:
        customer = worlds.customer(
            session, runtime.vault, 0, external_id=f"cust-{name}", email=address, country="DE"
        )
        acme = world.principals["acme"]
        order_ext = f"ord-{name}-acme"
        worlds.order(session, customer, acme, ext=order_ext, status="shipped", placed_at=utcnow())
        alias = worlds.disclosed(session, worlds.parts_of(runtime), customer, acme, ref=order_ext)
        session.commit()
        world.real[name] = address  # the relay kit's privacy check covers it too
        return Customer(name, address, alias.address, alias.reverse_address)


def send_to_seller(relay: Relay, customer: Customer, data: bytes) -> tuple[int, str]:
    """The customer's mail to the seller's reverse alias, from its own (SPF-passing) server."""
    return relay.send(data, mail_from=customer.real, rcpt=customer.reverse)


def send_to_customer(relay: Relay, customer: Customer, data: bytes) -> tuple[int, str]:
    """The seller's mail to the customer's alias, authenticated as the seller."""
    token = relay.world.keys["acme"]
    return relay.send(data, mail_from=SELLER_ADDRESS, rcpt=customer.alias, token=token)


__all__ = [
    "Customer",
    "add_customer",
    "folded",
    "leaf",
    "multipart",
    "pgp_public_key",
    "pgp_signature",
    "rfc822",
    "send_to_customer",
    "send_to_seller",
    "top",
]
