"""Address forms and the cheap test before rendering, without a relay: what counts as the same
mailbox, what does not, and a property that no disguise shows an address to the independent
judge (``leak_oracle``) without passing ``AT_GATE`` and being found by the relay's views."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from leak_oracle import text_shows

from mailveil.relay.address_forms import AT_GATE, Matcher, fold, mailbox_key
from mailveil.relay.redact import Redactor
from mailveil.relay.render import html_shows, rewrite_html

ADA = "Ada.Lovelace@private-mailbox.example"
ALIAS = "c-1@relay.test"


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("Ada.Lovelace@Example.NET", "ada.lovelace@example.net"),
        ("ada.lovelace+news@example.net", "ada.lovelace@example.net"),
        ("Ada.Byron+x@gmail.com", "adabyron@googlemail.com"),
        ("a.d.a.b.y.r.o.n@GMail.com", "adabyron@gmail.com"),
        ("juergen@b\u00fccher.example", "juergen@xn--bcher-kva.example"),
        ("ada\uff20example\u3002net", "ada@example.net"),
    ],
)
def test_one_mailbox_one_key(one: str, other: str) -> None:
    assert mailbox_key(fold(one)) == mailbox_key(other)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("ada.lovelace@example.net", "adalovelace@example.net"),  # dots count off Gmail
        ("ada-news@example.net", "ada@example.net"),  # "-" is not a separator
        ("ada@example.net", "ada@mail.example.net"),
    ],
)
def test_different_mailboxes_keep_different_keys(one: str, other: str) -> None:
    assert mailbox_key(one) != mailbox_key(other)


def test_a_domain_rule_spares_the_relays_own_mailboxes() -> None:
    matcher = Matcher({}, {"market.example": "s-1@relay.market.example"}, "relay.market.example")
    assert matcher.found(fold("write to owner@market.example"))
    assert matcher.found(fold("or x@eu.market.example"))
    assert not matcher.found(fold("reply to c-9@relay.market.example"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail Ada.Lovelace+x@private-mailbox.example!", "mail c-1@relay.test!"),
        ("<Ada.Lovelace@private-mailbox.example>", "<c-1@relay.test>"),
        ("xyzAda.Lovelace@private-mailbox.example.org.", "c-1@relay.test."),
        ("Ada.Lovelace&#64;private-mailbox&#x2E;example", "c-1@relay.test"),
        ("ada.lo\u00advelace\uff20private-mailbox.example ok", "c-1@relay.test ok"),
    ],
)
def test_text_is_rewritten_over_the_whole_mailbox(text: str, expected: str) -> None:
    assert Redactor({ADA: ALIAS}).text(text) == expected


def test_a_css_at_rule_does_not_open_the_gate_but_an_address_on_such_a_domain_does() -> None:
    """``@media (`` is not an address (nearly every HTML mail has one, so it must not cost a
    rendering); ``ada@media.example`` split right after ``@media`` still is."""
    assert not AT_GATE.search("<style>@media (max-width:600px){.a{}} @import url(x);</style>")
    redactor = Redactor({"ada@media.example": ALIAS})
    assert html_shows("<p>ada@media<wbr>.example</p>", redactor.matcher)
    calendar = "ATTENDEE:mailto:ada@media\r\n .example\r\n"
    assert redactor.found(calendar, re.compile(r"\r?\n[ \t]"))
    assert not redactor.found(calendar)  # unfolded only: the caller passes the fold


def test_html_rewrite_keeps_markup_and_drops_only_the_address() -> None:
    source = "<p>Hi <b>Ada.Lovelace</b><span></span>@private-<i>mailbox</i>.example, bye</p>"
    out = rewrite_html(source, Redactor({ADA: ALIAS}).matcher)
    assert "<b>c-1@relay.test</b>" in out and ", bye</p>" in out
    assert not html_shows(out, Redactor({ADA: ALIAS}).matcher)


SPLITS = [
    "<span></span>",
    "<!-- c -->",
    "<wbr>",
    "</b><b>",
    "&#8203;",
    "&shy;",
    "\u200b",
    "<style>@media (x){}</style>",
    "",
]
FORMS = {
    "@": ["@", "&#64;", "&#064", "&#X40;", "&#xff20;", "&#65131;", "&commat;", "\uff20", "%40"],
    ".": [".", "&#46;", "\u3002"],
}


@st.composite
def disguised(draw: st.DrawFn) -> str:
    """The address one character at a time, each maybe escaped, with markup, invisible
    characters or junk between them."""
    out = [draw(st.sampled_from(["", "x ", "<p>", "&amp; "]))]
    for char in ADA:
        choices = FORMS.get(char, [char, char.upper(), f"&#{ord(char)};", chr(ord(char) + 0xFEE0)])
        out.append(draw(st.sampled_from(choices)))
        out.append(draw(st.sampled_from(SPLITS)))
    return "".join(out)


@settings(max_examples=300, deadline=None)
@given(disguised())
def test_no_disguise_escapes_the_cheap_test_or_the_views(source: str) -> None:
    """What the judge sees rendered (HTML) or read (text), the gate lets through to rendering
    and the relay's views find. A failure here means the cheap test can be bypassed."""
    redactor = Redactor({ADA: ALIAS})
    if text_shows(source, ADA, is_html=True):
        assert AT_GATE.search(source), source
        assert html_shows(source, redactor.matcher), source
    if text_shows(source, ADA, is_html=False):
        assert AT_GATE.search(source), source
        assert redactor.found(source), source
