"""The relay_messages rows (the table is in ``relay.models``) and the VERP bounce tokens that
point at them.

One row per message the relay hands to the smarthost, in either direction. It holds what the
ledger entry holds (who, which alias, why, size, body hash) plus what the relay needs later:

- ``token``: the public id of the message. The envelope sender of every relayed message is
  ``bounce+<token><mac>@<relay domain>`` (VERP), where ``mac`` is an HMAC of the token under
  a key in the keys directory, so a bounce names its message and cannot be forged or guessed
  (``verp_address`` / ``verify_bounce_local``); ``relay/bounces.py`` maps bounces back here.
- ``message_id``: the Message-ID the relay wrote on the delivered copy. A later message whose
  In-Reply-To/References names one issued for a customer's message to this principal is a
  reply in an existing thread (``thread_exists``), which the messaging policy treats apart.
- ``status``: ``sending`` (written with the ledger entry before the smarthost is asked),
  then ``delivered``, ``deferred`` (smarthost 4xx or down: the sender was told to retry),
  ``rejected`` (smarthost 5xx), ``bounced`` (a DSN came back later) or ``unknown`` (the
  relay stopped between asking the smarthost and recording its answer: ``relay.reconcile``
  says so, it never guesses "delivered").
- ``retry_key`` and ``attempts``: a sender's retry of a deferred (or unknown) message is the
  same message (same envelope, same bytes); it takes over this row instead of making a new
  one, so the ledger has one ``message`` entry per message (``relay.reconcile``); the row's
  ``created_at``, Message-ID, size and hash are then the latest attempt's.

No address of either side is stored: customers and principals are named by id, the alias is
on the relay domain.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.config.settings import Settings  # not the package: see content_rules
from mailveil.keyfiles import KeyFileError, read_secret, write_secret
from mailveil.relay.models import RelayMessage

VERP_KEY_FILE = "relay-verp.key"
# Retired keys (custody.rotation): relay-verp-retired-<unix time of retirement>-<hex>.key
VERP_RETIRED_PREFIX = "relay-verp-retired-"
VERP_PREFIX = "bounce+"
TOKEN_BYTES = 10  # 80 random bits: 16 base32 characters
MAC_BYTES = 10  # 80-bit tag: forging a bounce address means guessing it
_TOKEN_CHARS = TOKEN_BYTES * 8 // 5
_MAC_CHARS = MAC_BYTES * 8 // 5

DIRECTION_TO_CUSTOMER = "to_customer"
DIRECTION_TO_PRINCIPAL = "to_principal"
DIRECTIONS = (DIRECTION_TO_CUSTOMER, DIRECTION_TO_PRINCIPAL)
STATUSES = ("sending", "delivered", "deferred", "rejected", "bounced", "unknown")


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def init_verp_key(settings: Settings) -> bool:
    """Create the VERP signing key if absent (idempotent). True when it was made."""
    path = settings.keys_dir / VERP_KEY_FILE
    if path.exists():
        return False
    try:
        write_secret(path, os.urandom(32))
    except KeyFileError:  # another process made it first; theirs is used
        return False
    return True


def load_verp_key(settings: Settings) -> bytes:
    key = read_secret(settings.keys_dir / VERP_KEY_FILE)
    if len(key) != 32:
        raise KeyFileError(f"{settings.keys_dir / VERP_KEY_FILE} is not a 32-byte key")
    return key


# A key that verifies bounce addresses: the current one, or it and the retired ones.
VerpKey = bytes | tuple[bytes, ...]


class VerpKeys:
    """The key that signs new VERP addresses and the retired ones still honoured (retired
    less than ``verp_grace_days`` ago); re-read every ``key_refresh_seconds``."""

    def __init__(self, keys_dir: Path, grace_seconds: float, refresh_seconds: float) -> None:
        self._dir = keys_dir
        self._grace = grace_seconds
        self._refresh = refresh_seconds
        self._checked = 0.0
        self._keys: tuple[bytes, ...] = ()
        self.refresh(force=True)

    @classmethod
    def load(cls, settings: Settings) -> VerpKeys:
        return cls(
            settings.keys_dir, settings.verp_grace_days * 86400.0, settings.key_refresh_seconds
        )

    def refresh(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < self._refresh:
            return
        current = _read_verp(self._dir / VERP_KEY_FILE)
        retired = []
        for path in sorted(self._dir.glob(f"{VERP_RETIRED_PREFIX}*.key"), reverse=True):
            stamp = path.name[len(VERP_RETIRED_PREFIX) :].split("-", 1)[0]
            if stamp.isdigit() and time.time() - int(stamp) <= self._grace:
                retired.append(_read_verp(path))
        self._keys = (current, *retired)
        self._checked = now

    @property
    def current(self) -> bytes:
        self.refresh()
        return self._keys[0]

    def accepted(self) -> tuple[bytes, ...]:
        self.refresh()
        return self._keys


def _read_verp(path: Path) -> bytes:
    key = read_secret(path)
    if len(key) != 32:
        raise KeyFileError(f"{path} is not a 32-byte key")
    return key


def new_token() -> str:
    return _b32(os.urandom(TOKEN_BYTES))


def _mac(key: bytes, token: str) -> str:
    return _b32(hmac.new(key, token.encode("ascii"), hashlib.sha256).digest()[:MAC_BYTES])


def verp_address(key: bytes, token: str, relay_domain: str) -> str:
    """The envelope sender for the message ``token``: bounces come back to it."""
    return f"{VERP_PREFIX}{token}{_mac(key, token)}@{relay_domain}"


def is_verp_local(local: str) -> bool:
    return local.lower().startswith(VERP_PREFIX)


def verify_bounce_local(key: VerpKey, local: str) -> str | None:
    """The token named by a VERP local part (``bounce+...``) if its tag verifies under the
    key (or one of the keys), else None."""
    if not is_verp_local(local):
        return None
    rest = local[len(VERP_PREFIX) :].lower()
    if len(rest) != _TOKEN_CHARS + _MAC_CHARS:
        return None
    token, tag = rest[:_TOKEN_CHARS], rest[_TOKEN_CHARS:]
    if not token.isalnum():
        return None
    keys = (key,) if isinstance(key, bytes) else key
    if not any(hmac.compare_digest(tag, _mac(k, token)) for k in keys):
        return None
    return token


def get_by_token(session: Session, token: str) -> RelayMessage | None:
    return session.scalar(select(RelayMessage).where(RelayMessage.token == token))


def thread_exists(
    session: Session, *, customer_id: int, principal_id: int, message_ids: Sequence[str]
) -> bool:
    """True if one of ``message_ids`` was issued by the relay on a message the customer sent
    to this principal: the principal is replying in a thread the customer started or joined.

    Only customer-sent messages count, so a principal cannot make its own earlier messages a
    "thread" to get past an opt-out.
    """
    ids = [m for m in dict.fromkeys(message_ids) if m][:50]
    if not ids:
        return False
    found = session.scalar(
        select(RelayMessage.id)
        .where(
            RelayMessage.message_id.in_(ids),
            RelayMessage.customer_id == customer_id,
            RelayMessage.principal_id == principal_id,
            RelayMessage.direction == DIRECTION_TO_PRINCIPAL,
        )
        .limit(1)
    )
    return found is not None


__all__ = [
    "DIRECTIONS",
    "DIRECTION_TO_CUSTOMER",
    "DIRECTION_TO_PRINCIPAL",
    "STATUSES",
    "VERP_KEY_FILE",
    "VERP_PREFIX",
    "VERP_RETIRED_PREFIX",
    "VerpKey",
    "VerpKeys",
    "get_by_token",
    "init_verp_key",
    "is_verp_local",
    "load_verp_key",
    "new_token",
    "thread_exists",
    "verify_bounce_local",
    "verp_address",
]
