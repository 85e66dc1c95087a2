"""Abuse-report intake beside the bare stdlib parse of the same bytes, in one run.

    .venv/bin/python benchmarks/intake.py                 # 3,000 reports over the shape mix
    .venv/bin/python benchmarks/intake.py --reports 20000

The mix: the real ARF samples (../shared/vectors/arf-parsedmarc/, where present), a built ARF
report, a message/rfc822 attachment, a base64 .eml file, Gmail/Outlook/Apple/Thunderbird
inline forwards (plain and HTML), a three-level nested forward, a 300 KB newsletter forwarded
inline, and a report with no original. Each report is timed through ``parse_report`` (the
whole intake: limits, parse, finding and reading the original) and, interleaved, through
``email.message_from_bytes(raw, policy=email.policy.default)`` alone, the floor any
stdlib-based intake pays. Reported per shape and overall: median and p99 per report, and the
ratio. Target: the intake's median ≤ 20 ms.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import os
import statistics
import time
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mailveil.detect.intake import parse_report

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("MAILVEIL_SHARED_DIR", HERE.parent.parent / "shared"))
ALIAS = "alias-7f3k@relay.example"
TARGET_MS = 20.0


def spam(body: str = "Buy our catalogues now.\n") -> EmailMessage:
    message = EmailMessage()
    for hop in range(4):
        message["Received"] = (
            f"from mx{hop}.spam.example (mx{hop}.spam.example [198.51.100.{hop + 7}]) "
            f"by mx.home.example with ESMTPS id X{hop} for <{ALIAS}>; "
            "Tue, 07 Jan 2025 10:15:00 +0000"
        )
    message["Authentication-Results"] = (
        "mx.home.example; spf=pass smtp.mailfrom=spam.example; dkim=pass header.d=spam.example"
    )
    message["DKIM-Signature"] = "v=1; a=rsa-sha256; d=spam.example; s=sel1; h=from; bh=a; b=b"
    message["From"] = "Catalogue King <king@spam.example>"
    message["To"] = ALIAS
    message["Subject"] = "=?utf-8?q?G=C3=BCnstige_Kataloge?="
    message["Date"] = "Tue, 07 Jan 2025 10:14:57 +0000"
    message["Message-ID"] = "<cat-1@spam.example>"
    message["List-Unsubscribe"] = "<mailto:unsub@spam.example>"
    message.set_content(body)
    message.add_alternative(f"<html><body><p>{body}</p></body></html>", subtype="html")
    return message


def wrapper(plain: str | None = None, html: str | None = None) -> EmailMessage:
    message = EmailMessage()
    message["Authentication-Results"] = "mx.relay.example; spf=pass smtp.mailfrom=home.example"
    message["DKIM-Signature"] = "v=1; a=ed25519-sha256; d=home.example; s=k1; h=from; bh=a; b=b"
    message["From"] = "Jo Customer <jo@home.example>"
    message["To"] = "report-abuse@relay.example"
    message["Subject"] = "Fwd: spam"
    message["Message-ID"] = "<rep-1@home.example>"
    message.set_content(plain or "see below\n")
    if html:
        message.add_alternative(html, subtype="html")
    return message


GMAIL = (
    "FYI\n\n---------- Forwarded message ---------\nFrom: Catalogue King <king@spam.example>\n"
    f"Date: Tue, Jan 7, 2025 at 10:15 AM\nSubject: Cheap catalogues\nTo: <{ALIAS}>\n\n\n"
)
OUTLOOK_HTML = (
    "<html><body><p class=MsoNormal>Spam</p><div style='border-top:solid #E1E1E1 1.0pt'>"
    "<p class=MsoNormal><b>From:</b> Catalogue King &lt;king@spam.example&gt;<br>"
    f"<b>Sent:</b> Tuesday, January 7, 2025 10:15 AM<br><b>To:</b> {ALIAS}<br>"
    "<b>Subject:</b> Cheap catalogues</p></div><p>Buy</p>"
    + "<p>more text</p>" * 200
    + "</body></html>"
)
APPLE = (
    "Begin forwarded message:\n\nFrom: Catalogue King <king@spam.example>\n"
    f"Subject: Cheap catalogues\nDate: 7 January 2025 at 10:15:00 CET\nTo: {ALIAS}\n\nBuy\n"
)
THUNDERBIRD_DE = (
    "-------- Weitergeleitete Nachricht --------\nBetreff: \tCheap catalogues\n"
    "Datum: \tTue, 7 Jan 2025 10:15:00 +0000\nVon: \tCatalogue King <king@spam.example>\n"
    f"An: \t{ALIAS}\n\nKauf\n"
)


def arf_built() -> bytes:
    fields = (
        "Feedback-Type: abuse\r\nUser-Agent: Gen/1.0\r\nVersion: 1\r\n"
        f"Original-Mail-From: <b@spam.example>\r\nOriginal-Rcpt-To: <{ALIAS}>\r\n"
        "Source-IP: 198.51.100.7\r\nArrival-Date: Tue, 07 Jan 2025 10:15:00 +0000\r\n"
    )
    return (
        "From: <abuse@isp.example>\r\nTo: report-abuse@relay.example\r\nSubject: report\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=feedback-report; "
        'boundary="B"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nAn abuse report.\r\n'
        f"--B\r\nContent-Type: message/feedback-report\r\n\r\n{fields}\r\n"
        f"--B\r\nContent-Type: message/rfc822\r\n\r\n{spam().as_string(policy=SMTP)}\r\n--B--\r\n"
    ).encode()


def shapes() -> dict[str, bytes]:
    mix: dict[str, bytes] = {}
    vectors = SHARED / "vectors" / "arf-parsedmarc"
    for path in sorted(vectors.glob("*.eml")):
        mix[f"arf {path.stem[:26]}"] = path.read_bytes()
    mix["arf built"] = arf_built()
    attached = wrapper()
    attached.add_attachment(spam())
    mix["rfc822 attachment"] = attached.as_bytes()
    eml = wrapper()
    eml.add_attachment(spam().as_bytes(), maintype="application", subtype="octet-stream",
                       filename="spam.eml")  # fmt: skip
    mix["eml base64"] = eml.as_bytes()
    mix["inline gmail"] = wrapper(GMAIL + "Buy\n").as_bytes()
    mix["inline outlook html"] = wrapper(html=OUTLOOK_HTML).as_bytes()
    mix["inline apple"] = wrapper(APPLE).as_bytes()
    mix["inline thunderbird de"] = wrapper(THUNDERBIRD_DE).as_bytes()
    inner = wrapper(APPLE)
    middle = wrapper("my partner got this\n")
    middle.add_attachment(inner)
    outer = wrapper(GMAIL)
    outer.add_attachment(middle)
    mix["nested 3 levels"] = outer.as_bytes()
    mix["inline 300 KB newsletter"] = wrapper(GMAIL + "Offer of the day. " * 17_000).as_bytes()
    mix["no original"] = wrapper("Stop sending me spam!\n").as_bytes()
    return mix


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=int, default=3000, help="reports timed in all")
    args, _ = parser.parse_known_args()  # run_all.py passes other benchmarks' options too
    console = Console(width=max(120, Console().width))
    mix = shapes()
    for name, raw in mix.items():  # warm-up, and every shape must be read as intended
        result = parse_report(raw)
        expected = "no_original" if name == "no original" else "found"
        assert result.outcome == expected, (name, result.reason)
    rounds = max(1, args.reports // len(mix))
    intake: dict[str, list[float]] = {name: [] for name in mix}
    bare: dict[str, list[float]] = {name: [] for name in mix}
    clock = time.perf_counter
    for _ in range(rounds):
        for name, raw in mix.items():
            start = clock()
            parse_report(raw)
            middle = clock()
            email.message_from_bytes(raw, policy=email.policy.default)
            end = clock()
            intake[name].append((middle - start) * 1000)
            bare[name].append((end - middle) * 1000)

    table = Table(title=f"abuse-report intake: {rounds * len(mix):,} reports, {len(mix)} shapes")
    table.caption = "ms per report; bare = email.message_from_bytes(policy=default) alone"
    for column in ("shape", "bytes", "intake p50", "intake p99", "bare p50", "bare p99",
                   "ratio"):  # fmt: skip
        table.add_column(column, justify="left" if column == "shape" else "right", no_wrap=True)
    for name, raw in mix.items():
        p50, base = statistics.median(intake[name]), statistics.median(bare[name])
        table.add_row(name, f"{len(raw):,}", f"{p50:.2f}", f"{percentile(intake[name], 0.99):.2f}",
                      f"{base:.2f}", f"{percentile(bare[name], 0.99):.2f}",
                      f"{p50 / base:.1f}x" if base else "-")  # fmt: skip
    every = [t for times in intake.values() for t in times]
    every_bare = [t for times in bare.values() for t in times]
    p50, base = statistics.median(every), statistics.median(every_bare)
    overall = (f"{p50:.2f}", f"{percentile(every, 0.99):.2f}", f"{base:.2f}",
               f"{percentile(every_bare, 0.99):.2f}", f"{p50 / base:.1f}x")  # fmt: skip
    table.add_row("all", "", *overall, style="bold")
    console.print(table)
    verdict = "meets" if p50 <= TARGET_MS else "MISSES"
    console.print(
        f"intake median {p50:.2f} ms per report {verdict} the ≤ {TARGET_MS:.0f} ms target"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
