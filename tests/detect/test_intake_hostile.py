"""Abuse-report intake under hostile input: every failure is an outcome with a reason code,
and every limit is enforced, as the counters in the result show (never by timing)."""

from __future__ import annotations

import base64
import io
import random
import zipfile
from email.message import EmailMessage
from email.policy import SMTP

import pytest

from mailveil.detect.intake import IntakeLimits, ReportParse, parse_report
from mailveil.detect.intake_model import MiB, Reason
from testpaths import shared_dir

ALIAS = "alias-7f3k@relay.example"
HEAD = b"From: Jo <jo@home.example>\r\nTo: report-abuse@relay.example\r\nSubject: spam\r\n"


# What a test of skipping and scan limits judges is the work done (the stats), not the clock:
# on a loaded machine reading megabytes can pass the 2 s wall-clock budget, which has its own
# test.
UNHURRIED = IntakeLimits(time_budget_s=60.0)


def spam_bytes(body: str = "Buy now\n") -> bytes:
    message = EmailMessage()
    message["Received"] = "from mx.spam.example ([198.51.100.7]) by mx.home.example; " + (
        "Tue, 07 Jan 2025 10:15:00 +0000"
    )
    message["From"] = "King <king@spam.example>"
    message["To"] = ALIAS
    message["Subject"] = "Cheap"
    message.set_content(body)
    return message.as_bytes(policy=SMTP)


def attach(inner: bytes, *, eml: bool = False, b64: bool = False, level: int = 0) -> bytes:
    ctype = 'application/octet-stream; name="x.eml"' if eml else "message/rfc822"
    disposition = 'attachment; filename="x.eml"' if eml else "attachment"
    body = base64.encodebytes(inner) if b64 else inner
    cte = b"base64" if b64 else b"7bit"
    mark = f"b{level}".encode()  # nested parts need distinct boundaries
    return (
        HEAD + b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=" + mark + b"\r\n\r\n"
        b"--" + mark + b"\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        b"--" + mark + b"\r\nContent-Type: " + ctype.encode() + b"\r\nContent-Disposition: "
        b"" + disposition.encode() + b"\r\nContent-Transfer-Encoding: " + cte + b"\r\n\r\n"
        b"" + body + b"\r\n--" + mark + b"--\r\n"
    )


def no_address_leaks(result: ReportParse) -> None:
    """Reason texts and notes are for logs: they never quote the report."""
    for text in (result.detail, *result.notes):
        assert "@" not in text


def rejected(result: ReportParse, reason: Reason) -> None:
    assert (result.outcome, result.reason) == ("rejected", reason), result.notes
    assert result.original is None
    no_address_leaks(result)


def test_empty_and_junk() -> None:
    rejected(parse_report(b""), Reason.EMPTY)
    rejected(parse_report(b"\r\n \r\n"), Reason.EMPTY)
    rejected(parse_report(bytes(range(256)) * 40), Reason.MALFORMED)
    rejected(parse_report(b"\n\nonly a body, no header at all\n"), Reason.MALFORMED)


def test_too_large_is_refused_before_parsing() -> None:
    result = parse_report(b"X" * (10 * MiB + 1))
    rejected(result, Reason.TOO_LARGE)
    assert result.stats.raw_bytes == 10 * MiB + 1 and result.stats.messages_parsed == 0
    small = parse_report(spam_bytes(), limits=IntakeLimits(max_raw_bytes=100))
    rejected(small, Reason.TOO_LARGE)


def test_megabytes_of_headers() -> None:
    raw = (
        HEAD + b"X-Junk: " + b"a" * 70 + b"\r\n" * 1 + (b"X-Junk: " + b"a" * 70 + b"\r\n") * 40_000
    )
    result = parse_report(raw + b"\r\nbody\r\n")
    rejected(result, Reason.HEADERS_TOO_LARGE)
    assert result.stats.largest_header_section > IntakeLimits().max_header_bytes
    assert result.stats.messages_parsed == 0
    # The same inside an attached message, which only the parsed tree shows.
    inner = (b"X-Junk: " + b"a" * 70 + b"\r\n") * 20_000 + spam_bytes()
    nested = parse_report(attach(inner))
    rejected(nested, Reason.HEADERS_TOO_LARGE)
    # One endless folded header line is a header section too.
    folded = HEAD + b"Subject: x" + b"\r\n y" * 600_000 + b"\r\n\r\nbody\r\n"
    rejected(parse_report(folded), Reason.HEADERS_TOO_LARGE)


def test_thousands_of_parts() -> None:
    parts = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\npart\r\n" for _ in range(5000))
    raw = HEAD + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + parts + b"--b--\r\n"
    result = parse_report(raw)
    rejected(result, Reason.TOO_MANY_PARTS)
    assert result.stats.boundary_lines > 5000 and result.stats.messages_parsed == 0
    # Under the raw-bytes guard, the walk counts parts and stops at the limit.
    few = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\npart\r\n" for _ in range(150))
    raw = HEAD + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + few + b"--b--\r\n"
    counted = parse_report(raw, limits=IntakeLimits(max_parts=100, max_depth=3))
    rejected(counted, Reason.TOO_MANY_PARTS)
    assert counted.stats.parts_seen == 101


def nested_multiparts(levels: int) -> bytes:
    raw = b"--b0\r\nContent-Type: text/plain\r\n\r\ninnermost\r\n"
    for i in range(levels, 0, -1):
        raw = (
            f'--b{i - 1}\r\nContent-Type: multipart/mixed; boundary="b{i}"\r\n\r\n'.encode()
            + raw.replace(b"--b0\r\n", f"--b{i}\r\n".encode(), 1)
            + f"--b{i}--\r\n".encode()
        )
    return HEAD + b'Content-Type: multipart/mixed; boundary="b0"\r\n\r\n' + raw + b"--b0--\r\n"


def test_deep_mime_nesting() -> None:
    result = parse_report(nested_multiparts(60))
    rejected(result, Reason.MIME_TOO_DEEP)
    assert result.stats.max_mime_depth_seen == IntakeLimits().max_mime_depth + 1
    # Deeper than the stdlib parser can recurse: still an outcome.
    rejected(
        parse_report(nested_multiparts(3000), limits=IntakeLimits(max_parts=10_000)),
        Reason.MIME_TOO_DEEP,
    )


def test_forwards_fifty_levels_deep_as_attachments() -> None:
    raw = spam_bytes()
    for level in range(50):
        raw = attach(raw, level=level)
    result = parse_report(raw)
    rejected(result, Reason.FORWARD_TOO_DEEP)
    assert result.stats.levels_unwrapped == IntakeLimits().max_depth + 1
    # Within the limit the innermost is found.
    ok = spam_bytes()
    for level in range(IntakeLimits().max_depth):
        ok = attach(ok, level=level)
    found = parse_report(ok)
    assert (found.outcome, found.depth) == ("found", IntakeLimits().max_depth)
    assert found.original is not None and found.original.to == (ALIAS,)


def test_forwards_fifty_levels_deep_inline() -> None:
    block = (
        "---------- Forwarded message ---------\nFrom: A <a{n}@home.example>\n"
        "Date: Tue, Jan 7, 2025 at 10:15 AM\nSubject: Fwd\nTo: <b@home.example>\n\n"
    )
    body = "".join(block.format(n=n) for n in range(50)) + "the end\n"
    raw = HEAD + b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + body.encode()
    result = parse_report(raw)
    rejected(result, Reason.FORWARD_TOO_DEEP)
    assert result.stats.levels_unwrapped == IntakeLimits().max_depth + 1
    ok = parse_report(raw, limits=IntakeLimits(max_depth=60))
    assert (ok.outcome, ok.depth) == ("found", 50)
    assert ok.original is not None and ok.original.sender is not None
    assert ok.original.sender.address == "a49@home.example"


def test_nested_base64_eml_files_within_the_decoded_budget() -> None:
    raw = spam_bytes()
    for _ in range(6):
        raw = attach(raw, eml=True, b64=True)
    found = parse_report(raw)
    assert (found.outcome, found.depth) == ("found", 6)
    assert set(found.path) == {"eml_attachment"}
    # The same with a total budget smaller than what the levels decode to.
    limits = IntakeLimits(max_total_decoded_bytes=len(raw) // 2)
    result = parse_report(raw, limits=limits)
    rejected(result, Reason.DECODED_LIMIT)
    assert result.stats.decoded_bytes <= limits.max_total_decoded_bytes


def test_base64_bomb_part_is_skipped_not_decoded() -> None:
    huge = spam_bytes(body="A" * (5 * MiB))
    raw = attach(huge, eml=True, b64=True)
    result = parse_report(raw, limits=UNHURRIED)
    assert (result.outcome, result.reason) == ("no_original", Reason.NO_ORIGINAL)
    assert result.stats.parts_skipped_oversize == 1
    assert result.stats.decoded_bytes < 1024  # the small text part only


def test_zip_bomb_is_never_opened() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("spam.eml", b"\0" * (64 * MiB))  # 64 MiB in ~64 KiB
    data = base64.encodebytes(buffer.getvalue())
    for ctype, name in (("application/zip", "spam.zip"), ("application/octet-stream", "a.zip")):
        raw = (
            HEAD + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
            b"--b\r\nContent-Type: text/plain\r\n\r\nsee the archive\r\n"
            b"--b\r\nContent-Type: " + ctype.encode() + b"\r\nContent-Disposition: attachment; "
            b'filename="'
            + name.encode()
            + b'"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
            + data
            + b"\r\n--b--\r\n"
        )
        result = parse_report(raw)
        assert (result.outcome, result.reason) == ("no_original", Reason.NO_ORIGINAL)
        assert result.stats.archives_skipped == 1
        assert result.stats.decoded_bytes < 100  # the archive was not even base64-decoded
    # An archive named .eml is read as a message, found to have no header, and skipped.
    fake = attach(buffer.getvalue(), eml=True, b64=True)
    result = parse_report(fake)
    assert result.outcome == "no_original" and any("header" in n for n in result.notes)


def test_huge_body_is_scanned_only_to_the_limit() -> None:
    body = b"nothing to see here\r\n" * 400_000
    raw = HEAD + b"Content-Type: text/plain\r\n\r\n" + body
    result = parse_report(raw, limits=UNHURRIED)
    assert result.outcome == "no_original"
    assert result.stats.scanned_chars == IntakeLimits().max_scan_chars


def test_unknown_and_wrong_charsets() -> None:
    forward = (
        "---------- Forwarded message ---------\nFrom: K\u00f6nig <king@spam.example>\n"
        f"Date: Tue, Jan 7, 2025 at 10:15 AM\nSubject: x\nTo: <{ALIAS}>\n\nbody\n"
    ).encode("latin-1")
    for charset in (b"x-klingon", b"zlib_codec", b"rot13", b"utf-8", b""):
        raw = (
            HEAD
            + b"Subject: =?x-unknown?B?SGFsbG8=?= =?utf-8?Q?caf=E9?=\r\n"
            + b'Content-Type: text/plain; charset="'
            + charset
            + b'"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n'
            + forward
        )
        result = parse_report(raw)
        assert result.outcome == "found", charset
        assert result.original is not None and result.original.to == (ALIAS,)
        assert result.original.sender is not None
        assert result.original.sender.address == "king@spam.example"
        assert result.envelope is not None and result.envelope.subject
    assert parse_report(raw).stats.charset_fallbacks == 0  # an absent charset is no fallback


def test_eight_bit_headers() -> None:
    inner = (
        b"Received: from mx ([198.51.100.7]) by mx.home.example;\r\n"
        b" Tue, 07 Jan 2025 10:15:00 +0000\r\n"
        b"From: K\xf6nig \xe2\x98\x83 <king@spam.example>\r\nTo: " + ALIAS.encode() + b"\r\n"
        b"Subject: Gr\xfc\xdfe \xff\xfe\r\nMessage-ID: <\xe9@x>\r\n\r\nbody\r\n"
    )
    result = parse_report(attach(inner))
    assert result.outcome == "found"
    o = result.original
    assert o is not None and o.sender is not None and o.sender.address == "king@spam.example"
    assert o.subject is not None and o.subject.startswith("Gr")
    assert result.stats.charset_fallbacks >= 1


# Each malformed shape and what the intake makes of it: broken MIME around a report holds no
# original; a feedback report whose part cannot be decoded, or a message that is all broken
# headers, is still read as the original itself.
NO_ORIGINAL, FOUND = ("no_original", Reason.NO_ORIGINAL), ("found", Reason.FOUND)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            HEAD + b"Content-Type: multipart/mixed\r\n\r\n--x\r\nno boundary parameter\r\n",
            NO_ORIGINAL,
        ),
        (
            HEAD + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: t',
            NO_ORIGINAL,
        ),
        (
            HEAD + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\nno parts at all\r\n',
            NO_ORIGINAL,
        ),
        (HEAD + b"Content-Type: message/rfc822\r\n\r\n", NO_ORIGINAL),
        (
            HEAD + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
            b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            b"!!!!\r\n--b--\r\n",
            NO_ORIGINAL,
        ),
        (
            HEAD + b"Content-Type: ;;;===\r\nContent-Transfer-Encoding: base64\r\n\r\n@@@",
            NO_ORIGINAL,
        ),
        (
            HEAD
            + b"Content-Type: text/plain; charset=\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n"
            b"begin 644 x\r\n!!!\r\nend\r\n",
            NO_ORIGINAL,
        ),
        (
            HEAD
            + b"Content-Type: multipart/report; report-type=feedback-report; boundary=b\r\n\r\n"
            b"--b\r\nContent-Type: message/feedback-report\r\nContent-Transfer-Encoding: base64\r\n"
            b"\r\n%%%\r\n--b--\r\n",
            FOUND,
        ),
        (
            b"From: \r\nTo: <<<>>>@@@,,,;;;\r\nDate: tomorrow\r\nReceived: ;;;\r\n"
            b"Resent-From: x\r\n\r\n",
            FOUND,
        ),
        (b" folded first line\r\nFrom: a\r\n\r\nbody", NO_ORIGINAL),
    ],
)
def test_malformed_mime_is_an_outcome(raw: bytes, expected: tuple[str, Reason]) -> None:
    result = parse_report(raw)
    assert (result.outcome, result.reason) == expected, result.notes
    no_address_leaks(result)


def test_time_budget_is_checked_as_it_goes() -> None:
    result = parse_report(spam_bytes(), limits=IntakeLimits(time_budget_s=0.0))
    rejected(result, Reason.TIME_BUDGET)


def test_mutated_samples_never_raise() -> None:
    """Seeded byte-level mutations of the real samples: each gives an outcome, none crashes."""
    samples = sorted((shared_dir() / "vectors" / "arf-parsedmarc").glob("*.eml"))
    rng = random.Random(5965)
    reasons: set[Reason] = set()
    for _ in range(400):
        data = bytearray(rng.choice(samples).read_bytes())
        for _ in range(rng.randint(1, 20)):
            at = rng.randrange(len(data))
            action = rng.random()
            if action < 0.4:
                data[at] = rng.randrange(256)
            elif action < 0.7:
                del data[at : at + rng.randint(1, 200)]
            else:
                data[at:at] = rng.choice([b"\r\n", b"--", b":", b"=?", b"\r\n\r\n", b"\xff"])
        result = parse_report(bytes(data))
        assert result.reason is not Reason.INTERNAL_ERROR, result.notes
        reasons.add(result.reason)
    assert Reason.FOUND in reasons
