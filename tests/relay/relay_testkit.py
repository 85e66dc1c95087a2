"""Test kit for the relay: the known smuggling variants, a raw-socket SMTP client, and
``traces`` (where an address still shows in a message).

The raw client exists because smtplib fixes line endings and dot-stuffs: smuggling tests must
put exact bytes on the wire.
"""

from __future__ import annotations

import email
import email.errors
import email.header
import email.policy
import email.utils
import socket

from mailveil.relay import codes

# The known SMTP smuggling variants: (fake end of data, the reply that names its first
# offending byte).
VARIANTS: list[tuple[bytes, codes.Reply]] = [
    (b"\n.\n", codes.BARE_LF),
    (b"\n.\r", codes.BARE_LF),
    (b"\r.\n", codes.BARE_CR),
    (b"\r.\r", codes.BARE_CR),
    (b"\n.\r\n", codes.BARE_LF),
    (b"\r.\r\n", codes.BARE_CR),
    (b"\r\n\x00.\r\n", codes.NUL_IN_DATA),
    (b"\r\n.\n", codes.BARE_LF),
    (b"\r\n.\r", codes.BARE_CR),
    (b"\r\n.\r\r\n", codes.BARE_CR),
    (b"\r\r\n.\r\r\n", codes.BARE_CR),
]


class RawClient:
    """Speaks SMTP over a plain socket, sending exactly the bytes it is given."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> tuple[int, str]:
        """One (possibly multi-line) reply: its code and its last line's text."""
        while True:
            line = self._line()
            if line[3:4] != b"-":
                return int(line[:3]), line[4:].decode("ascii", "replace")

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed with {self.buffer!r} unread")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def command(self, line: str) -> tuple[int, str]:
        self.send(line.encode("ascii") + b"\r\n")
        return self.reply()

    def rest(self) -> bytes:
        """Everything the server sends until it closes the connection."""
        data = self.buffer
        while chunk := self.sock.recv(65536):
            data += chunk
        self.buffer = b""
        return data


def _decoded_header(raw: str) -> str:
    """Header text as a reader's client shows it, with the stdlib alone (no relay code)."""
    try:
        return str(email.header.make_header(email.header.decode_header(raw)))
    except (LookupError, ValueError, email.errors.HeaderParseError):
        return raw


def traces(output: bytes, address: str) -> list[str]:
    """Where ``address`` (any case) still shows in ``output``: bytes, decoded headers, decoded
    parameters and file names, decoded bodies. Empty means the invariant holds."""
    needle = address.lower()
    found: list[str] = []
    if needle.encode() in output.lower():
        found.append("raw bytes")
    message = email.message_from_bytes(output, policy=email.policy.default)
    for part in message.walk():
        for name, raw in part.raw_items():
            if needle in _decoded_header(str(raw)).lower() or needle in name.lower():
                found.append(f"header {name}")
            try:
                if needle in str(part.get(name, "")).lower():
                    found.append(f"parsed header {name}")
            except Exception:  # noqa: S110 - only the raw check matters for junk headers.
                pass
        for header in ("content-type", "content-disposition"):
            for key, value in part.get_params(header=header) or []:
                if needle in str(email.utils.collapse_rfc2231_value(value)).lower():
                    found.append(f"{header} parameter {key}")
        if isinstance(part.preamble, str) and needle in part.preamble.lower():
            found.append("preamble")
        if isinstance(part.epilogue, str) and needle in part.epilogue.lower():
            found.append("epilogue")
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            if needle.encode() in payload.lower():
                found.append(f"decoded {part.get_content_type()} bytes")
            charset = part.get_content_charset() or "utf-8"
            try:
                text = payload.decode(charset, "replace")
            except LookupError:
                text = payload.decode("latin-1")
            if needle in text.lower():
                found.append(f"decoded {part.get_content_type()} text")
    return found
