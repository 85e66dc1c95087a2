"""Hypothesis strategies for hostile input, shared by the fuzzers of every parser that reads
it (relay parsing and rewriting, DSNs, the abuse-report intake, customer imports).

Messages are written byte by byte from a small grammar, not with the email package's
generator, so what is drawn is exactly what a hostile sender can send: folded and unfolded
fields, encoded-words valid and broken, RFC 2231 parameters, 8-bit bytes, MIME trees with
missing or stray boundaries, transfer encodings that do not decode, then a few bytes
mutated. Sizes are bounded per example (``MAX_*``) so each example has a bounded cost.

Every message names ``REAL`` in some form, so a fuzzer can check it never leaks.
"""

from __future__ import annotations

import base64
import quopri

from hypothesis import strategies as st

REAL = "Ada.Lovelace@private-mailbox.example"
MAX_PARTS = 8
MAX_DEPTH = 4

_ALPHABET = st.characters(codec="utf-8", exclude_categories=("Cs",))
_SAFE_TEXT = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=0, max_size=40
)
_WORDS = st.text(alphabet=_ALPHABET, min_size=0, max_size=40)


def _q_word(text: str) -> str:
    encoded = quopri.encodestring(text.encode("utf-8"), header=True).decode("ascii")
    return f"=?utf-8?q?{encoded.replace('?', '=3F')}?="


def _b_word(text: str) -> str:
    return f"=?utf-8?b?{base64.b64encode(text.encode('utf-8')).decode('ascii')}?="


address_forms = st.sampled_from(
    [
        REAL,
        f"<{REAL}>",
        f"Ada <{REAL}>",
        REAL.upper(),
        f'"{REAL}" <{REAL}>',
        _q_word(f"Ada <{REAL}>") + f" <{REAL}>",
        _b_word(REAL) + f" <{REAL}>",
        f"mailto:{REAL}",
    ]
)

header_values = st.one_of(
    _SAFE_TEXT,
    address_forms,
    _WORDS.map(_q_word),
    _WORDS.map(_b_word),
    st.sampled_from(["=?utf-8?q?broken", "=?x-unknown?b?@@@?=", "=?utf-8?b?QUJD?==?", "=?"]),
    st.builds(
        lambda n, v: "; ".join(f"p*{i}*=utf-8''{v}" for i in range(n)),
        st.integers(1, 12),
        st.sampled_from(["%41", "caf%C3%A9", "%ZZ", REAL.replace("@", "%40")]),
    ),
    st.binary(max_size=20).map(lambda b: b.decode("latin-1")),
)

header_names = st.sampled_from(
    [
        "Subject", "To", "Cc", "Reply-To", "Sender", "Comments", "Keywords", "References",
        "In-Reply-To", "Received", "X-Mailer", "Content-Description", "Resent-From",
        "Return-Path", "Message-ID", "Date", "Authentication-Results", "List-Unsubscribe",
    ]
)  # fmt: skip


@st.composite
def header_field(draw: st.DrawFn, name: str | None = None) -> bytes:
    field_name = name or draw(header_names)
    value = draw(header_values)
    if draw(st.booleans()):  # fold at a space
        value = value.replace(" ", "\r\n ", draw(st.integers(0, 3)))
    return f"{field_name}: {value}\r\n".encode("utf-8", "surrogateescape")


_ctypes = st.sampled_from(
    [
        "text/plain; charset=utf-8",
        "text/plain; charset=iso-8859-1",
        "text/html; charset=utf-8",
        "application/pdf",
        'application/octet-stream; name="a.bin"',
        "text/plain; charset=x-unknown",
    ]
)
_ctes = st.sampled_from(["7bit", "8bit", "base64", "quoted-printable", "x-bogus", "binary"])


@st.composite
def _body(draw: st.DrawFn, cte: str) -> bytes:
    text = draw(st.one_of(_WORDS, address_forms, st.just(f"write to {REAL} please")))
    data = text.encode("utf-8")
    if cte == "base64" and draw(st.booleans()):
        return base64.encodebytes(data).replace(b"\n", b"\r\n")
    if cte == "quoted-printable" and draw(st.booleans()):
        return quopri.encodestring(data).replace(b"\n", b"\r\n") + b"\r\n"
    return data + b"\r\n"  # as it is: for base64 and QP, an encoding that does not decode


@st.composite
def mime_part(draw: st.DrawFn, depth: int = 0, messages: bool = True) -> bytes:
    """A part's header section and body: a leaf, a multipart or (``messages``) an attached
    message."""
    kinds = ["leaf", "multi"] + (["message"] if messages else []) if depth < MAX_DEPTH else []
    kinds = kinds or ["leaf"]
    kind = draw(st.sampled_from(kinds))
    extra = b"".join(draw(st.lists(header_field(), max_size=2)))
    if kind == "leaf":
        cte = draw(_ctes)
        head = f"Content-Type: {draw(_ctypes)}\r\nContent-Transfer-Encoding: {cte}\r\n".encode()
        if draw(st.booleans()):
            head += b"Content-Disposition: attachment; " + draw(header_values).encode(
                "utf-8", "surrogateescape"
            ) + b"\r\n"  # fmt: skip
        return head + extra + b"\r\n" + draw(_body(cte))
    if kind == "message":
        return b"Content-Type: message/rfc822\r\n" + extra + b"\r\n" + draw(message(depth + 1))
    boundary = f"b{depth}_{draw(st.integers(0, 9))}".encode()
    children = draw(st.lists(mime_part(depth + 1, messages), min_size=0, max_size=3))
    body = b"".join(b"--" + boundary + b"\r\n" + child for child in children)
    if draw(st.booleans()):  # a close delimiter, or none (the parser must cope)
        body += b"--" + boundary + b"--\r\n"
    ctype = draw(st.sampled_from(["mixed", "alternative", "related", "signed", "report"]))
    return (
        f'Content-Type: multipart/{ctype}; boundary="{boundary.decode()}"\r\n'.encode()
        + extra
        + b"\r\npreamble\r\n"
        + body
    )


@st.composite
def message(draw: st.DrawFn, depth: int = 0) -> bytes:
    """A whole message: From (usually the real address), a few fields, a MIME tree."""
    fields = [draw(header_field("From"))] if draw(st.integers(0, 9)) else []
    fields += draw(st.lists(header_field(), max_size=6))
    if draw(st.booleans()):
        fields.append(b"MIME-Version: 1.0\r\n")
    return b"".join(fields) + draw(mime_part(depth))


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    """``base`` with up to three byte-level mutations: junk inserted, a slice cut, line
    endings changed."""
    data = draw(base)
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(data)))
        how = draw(st.sampled_from(["insert", "cut", "lf"]))
        if how == "insert":
            data = data[:at] + draw(st.binary(max_size=12)) + data[at:]
        elif how == "cut":
            data = data[:at] + data[at + draw(st.integers(1, 40)) :]
        else:
            data = data[:at] + data[at:].replace(b"\r\n", b"\n", 1)
    return data


hostile_messages = mutated(message())
