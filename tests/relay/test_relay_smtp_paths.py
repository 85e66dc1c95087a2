"""MAIL FROM / RCPT TO paths: the relay's fast reading of a plain ``<local@domain>`` gives
exactly what aiosmtpd's own parser gives, for every argument (plain, odd and hostile)."""

from __future__ import annotations

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import given, settings
from hypothesis import strategies as st

from mailveil.relay.server import RelaySMTP

CASES = [
    "<alice@example.com>",
    "<alice@example.com> SIZE=2048",
    "<alice@example.com>   SIZE=2048 BODY=8BITMIME",
    "<alice@example.com>\tSIZE=2048",
    "<alice@example.com> (comment) SIZE=1",
    "<alice@example.com> ",
    "<alice@example.com>x",
    "<first.last+tag@sub.example.com>",
    "<a!#$%&'*+/=?^_`{|}~-@example.com>",
    "<bounce-b1.abcdef=x@relay.example>",
    "<=?utf-8?q?x?=@example.com>",
    '<"quoted name"@example.com>',
    '<"plain"@example.com>',
    "<.alice@example.com>",
    "<alice.@example.com>",
    "<al..ice@example.com>",
    "<alice@[127.0.0.1]>",
    "<alice@example..com>",
    "<@route.example:alice@example.com>",
    "<alice@example.com",
    "<alice>",
    "<>",
    "<> SIZE=10",
    "alice@example.com",
    " <alice@example.com>",
    "(c)<alice@example.com>",
    "<alice@example.com>> SIZE=1",
    "<alice @example.com>",
    "<alice@ example.com>",
    "<a@b>",
    "<" + "l" * 80 + "@example.com>",
    "",
]


def parsers(limit: int = 0) -> tuple[RelaySMTP, SMTP]:
    # Only the address parsing is exercised: no connection, no handler.
    ours = RelaySMTP.__new__(RelaySMTP)
    theirs = SMTP.__new__(SMTP)
    ours.local_part_limit = theirs.local_part_limit = limit
    return ours, theirs


@pytest.mark.parametrize("limit", [0, 64])
@pytest.mark.parametrize("arg", CASES)
def test_paths_read_as_aiosmtpd_reads_them(arg: str, limit: int) -> None:
    ours, theirs = parsers(limit)
    assert ours._getaddr(arg) == theirs._getaddr(arg)


def test_plain_paths_take_the_fast_reading() -> None:
    ours, _ = parsers()
    assert ours._getaddr("<alice@example.com> SIZE=2048") == ("alice@example.com", "SIZE=2048")
    assert ours._getaddr("<alice@example.com>") == ("alice@example.com", "")


@settings(max_examples=400, deadline=None)
@given(
    st.text(alphabet='<>@.a=?"() \t[]:\\,;!-z', max_size=30),
    st.sampled_from([0, 3]),
)
def test_any_argument_reads_as_aiosmtpd_reads_it(arg: str, limit: int) -> None:
    ours, theirs = parsers(limit)
    try:
        expected = theirs._getaddr(arg)
    except Exception as exc:  # aiosmtpd's parser may fail on junk: ours must fail alike
        with pytest.raises(type(exc)):
            ours._getaddr(arg)
        return
    assert ours._getaddr(arg) == expected


_PIECE = st.text(alphabet='ab.=?-+"( \t', min_size=0, max_size=6)


@settings(max_examples=400, deadline=None)
@given(_PIECE, _PIECE, _PIECE, st.sampled_from([0, 3]))
def test_near_plain_paths_read_as_aiosmtpd_reads_them(
    local: str, domain: str, rest: str, limit: int
) -> None:
    arg = f"<{local}@{domain}>{rest}"
    ours, theirs = parsers(limit)
    assert ours._getaddr(arg) == theirs._getaddr(arg)
