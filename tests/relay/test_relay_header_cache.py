"""The relay's cached header registry reads every field as ``email.policy.default`` does."""

from __future__ import annotations

import datetime as dt
import email.policy
import email.utils

import hypothesis
import hypothesis.strategies

from mailveil.relay.parse import POLICY, SMTP_POLICY, CachedHeaders, parse_message

RAW = (
    b"From: =?utf-8?q?J=C3=BCrgen?= <j@example.com>\r\n"
    b"To: a@relay.example, b@relay.example\r\n"
    b"Subject: hello\r\n"
    b"Date: Tue, 01 Oct 2024 10:00:00 +0200\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n"
    b"--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhi\r\n"
    b'--XX\r\nContent-Type: text/html; charset="iso-8859-1"\r\n\r\n<p>hi</p>\r\n--XX--\r\n'
)


def test_reads_match_the_default_policy() -> None:
    ours = parse_message(RAW)
    theirs = email.message_from_bytes(RAW, policy=email.policy.default)
    assert ours.policy is POLICY
    for a, b in zip(ours.walk(), theirs.walk(), strict=True):
        assert [(k, str(v)) for k, v in a.items()] == [(k, str(v)) for k, v in b.items()]
        assert a.get_content_type() == b.get_content_type()
        assert a.get_params() == b.get_params()
        assert a.get_content_charset() == b.get_content_charset()
    assert ours["From"].addresses == theirs["From"].addresses
    assert ours.as_bytes(policy=SMTP_POLICY) == theirs.as_bytes(policy=email.policy.SMTP)


def test_one_parse_per_field_value_and_one_class_per_name() -> None:
    headers = CachedHeaders()
    first = headers("Content-Type", "text/plain; charset=utf-8")
    assert headers("Content-Type", "text/plain; charset=utf-8") is first
    assert headers("content-type", "text/html") is not first
    assert type(headers("Content-Type", "text/html")) is type(first)
    assert headers["CONTENT-TYPE"] is headers["content-type"]


def test_long_values_are_parsed_each_time() -> None:
    headers = CachedHeaders()
    long = "x" * (CachedHeaders.MAX_CACHED_CHARS + 1)
    a, b = headers("Subject", long), headers("Subject", long)
    assert a == b == long
    assert a is not b


NAMES = ["Acme Bench", "Acme, Inc.", "J. Doe", "O'Brien & Sons", "a;b", "x:y", "Müller", "",
         "Customer Service Team of a Company With a Long Name", "(paren) name"]  # fmt: skip
FIELDS = [
    ("To", "a1b2c3@relay.example"),
    ("To", "a@relay.example, b.c@relay.example"),
    ("To", "undisclosed-recipients:;"),
    ("Cc", ", ".join(f"alias-{i}@relay.example" for i in range(6))),  # folded: the registry
    ("Date", "Tue, 01 Oct 2024 08:00:00 +0000"),
    ("Message-ID", "<de456ba3b35ed5034370b105c33c6840@relay.example>"),
]


def test_own_fields_are_written_as_the_registry_writes_them() -> None:
    from email.headerregistry import Address
    from email.message import EmailMessage

    from mailveil.relay.rewrite import set_own

    values: list[tuple[str, str | Address]] = list(FIELDS)
    values += [("From", Address(display_name=n, addr_spec="r-x@relay.example")) for n in NAMES]
    for name, value in values:
        ours, theirs = EmailMessage(policy=POLICY), EmailMessage(policy=POLICY)
        set_own(ours, name, value)
        theirs[name] = value
        assert ours.as_bytes(policy=SMTP_POLICY) == theirs.as_bytes(policy=SMTP_POLICY), value


@hypothesis.settings(max_examples=400, deadline=None)
@hypothesis.given(
    hypothesis.strategies.text(alphabet='ab Zé"\\()<>@,;:.[]\r\n\t-', max_size=40),
    hypothesis.strategies.sampled_from(
        ["r-x@relay.example", "r.x+y@relay.example", '"q"@relay.example', "bad@@x", "r@[1.2.3.4]"]
    ),
)
def test_from_is_written_as_the_address_would_write_it(name: str, alias: str) -> None:
    """The rewriter's From skips building an Address when it would be stored as written; the
    field is the same bytes either way (or refused alike)."""
    from email.headerregistry import Address
    from email.message import EmailMessage

    from mailveil.relay.rewrite import from_field, set_own

    def written(make: object) -> bytes | str:
        message = EmailMessage(policy=POLICY)
        try:
            set_own(message, "From", make())  # type: ignore[operator]
            return message.as_bytes(policy=SMTP_POLICY)
        except Exception as exc:
            return type(exc).__name__

    assert written(lambda: from_field(name, alias)) == written(
        lambda: Address(display_name=name, addr_spec=alias)
    )


_ZONES = [dt.UTC, None, *(dt.timezone(dt.timedelta(minutes=m)) for m in (-480, 60, 330))]
_DATES = hypothesis.strategies.one_of(
    hypothesis.strategies.datetimes(
        min_value=dt.datetime(1970, 1, 2), timezones=hypothesis.strategies.sampled_from(_ZONES)
    ).map(lambda d: email.utils.format_datetime(d.replace(microsecond=0))),
    hypothesis.strategies.text(alphabet="0123456789 :+-,MonDecTue GMT", max_size=40),
)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(_DATES)
def test_the_sent_date_is_the_one_its_text_names(date: str) -> None:
    """The rewriter takes the Date field's instant from the parsed header instead of parsing
    its text again: the same instant (or none) either way."""
    from mailveil.relay.rewrite import sent_at

    try:
        message = parse_message(f"Date: {date}\r\nFrom: a@b.example\r\n\r\nx\r\n".encode())
        raw = message.get("Date")
    except Exception:
        return  # a field the parser refuses is refused before any date is read
    try:
        expected = email.utils.parsedate_to_datetime(str(raw)) if raw else None
    except (TypeError, ValueError, IndexError):
        expected = None
    got = sent_at(message)
    assert got == expected
    assert (got is None) or (expected is not None and got.tzinfo == expected.tzinfo)
