"""Tracker stripping: the functions on HTML, and through the real relay into the sink, with
the counts on the message's ledger entry and summed per seller. The benchmark's quick mode
runs on the corpus."""

from __future__ import annotations

import email.policy
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

from relay_server_kit import SELLER_ADDRESS, Relay, parsed

from mailveil.platform.trackers import tracker_counts
from mailveil.relay import codes
from mailveil.relay.trackers import strip_html, strip_message

PIXEL = '<img src="https://u1.ct.sendgrid.net/wf/open?upn=abc" width="1" height="1" alt="">'
SES = "https://x.r.us-east-1.awstrack.me/L0/https:%2F%2Fshop.example%2Forder%2F7/1/0100/abc=364"
OPAQUE = "https://shop.us21.list-manage.com/track/click?u=1&id=2&e=3"
HTML = (
    "<html><body><p>Your order shipped.</p>"
    '<img src="https://shop.example/logo.png" width="200" height="60" alt="Shop">'
    f'<a href="{SES}">Track it</a> <a href="{OPAQUE}">Our blog</a>'
    '<a href="https://shop.example/help?utm_source=mail&amp;lang=en">Help</a>'
    f"{PIXEL}</body></html>"
)
BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "trackers.py"


def test_strip_html_removes_pixels_unwraps_redirects_and_keeps_content() -> None:
    out, tally = strip_html(HTML)
    assert "wf/open" not in out and "logo.png" in out
    assert 'href="https://shop.example/order/7"' in out
    assert OPAQUE.replace("&", "&amp;") in out  # left working: its destination is a token
    assert "utm_source" not in out and "lang=en" in out
    assert (tally.pixels, tally.links, tally.opaque, tally.params) == (1, 1, 1, 1)
    untouched = "<p>Hello <a href='https://shop.example/p/1'>one</a></p>"
    assert strip_html(untouched) == (untouched, strip_html(untouched)[1])
    assert not strip_html(untouched)[1].changed


def test_signed_parts_are_left_alone() -> None:
    outer = EmailMessage()
    outer["Content-Type"] = (
        'multipart/signed; protocol="application/pgp-signature"; micalg=pgp-sha256'
    )
    inner = EmailMessage()
    inner.set_content(HTML, subtype="html")
    outer.attach(inner)
    assert not strip_message(outer).changed
    assert "wf/open" in inner.get_content()


def html_message(to: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = SELLER_ADDRESS
    msg["To"] = to
    msg["Subject"] = "[shipping] Your parcel"
    msg.set_content("Your order shipped.\n")
    msg.add_alternative(HTML, subtype="html")
    return msg.as_bytes(policy=email.policy.SMTP)


def test_trackers_are_stripped_in_mail_to_customers_and_counted(relay: Relay) -> None:
    w = relay.world
    alias = w.alias("alice", "acme")
    for _ in range(2):
        code, text = relay.send(html_message(alias), mail_from=SELLER_ADDRESS, rcpt=alias,
                                token=w.keys["acme"])  # fmt: skip
        assert f"{code} {text}" == str(codes.QUEUED)
    delivered = parsed(relay.delivered()[0].data)
    html = delivered.get_body(preferencelist=("html",))
    assert html is not None
    content = html.get_content()
    assert "wf/open" not in content and "awstrack" not in content
    assert "https://shop.example/order/7" in content and "logo.png" in content
    entry = relay.ledger("message")[0]
    assert entry["detail"]["trackers"] == {"pixels": 1, "links": 1, "opaque": 1, "params": 1}
    with relay.session_factory() as session:
        counts = tracker_counts(session, w.principals["acme"].id)
    assert counts["messages"] == 2 and counts["with_trackers"] == 2
    assert counts["pixels"] == 2 and counts["links"] == 2


def test_trackers_quick_benchmark_prints_recall_and_precision() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARK), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    for needle in ("pixels (img)", "redirects (a)", "recall", "precision", "time per message"):
        assert needle in done.stdout
