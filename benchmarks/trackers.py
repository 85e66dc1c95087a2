"""Tracker stripping on a corpus of marketing-mail HTML: recall and precision of tracking
pixels and click-tracking redirects, and the time it takes.

    .venv/bin/python benchmarks/trackers.py            # the corpus, 200 rounds for the timing
    .venv/bin/python benchmarks/trackers.py --quick    # what the test suite runs

The corpus (``benchmarks/data/trackers_corpus.json``) is snippets written for this benchmark,
each modelled on a public description or sample of how one sender tracks (Mailchimp,
SendGrid and its branded domains, Amazon SES, Klaviyo, HubSpot, Mailgun, Customer.io, Brevo,
Mailjet, Campaign Monitor, Constant Contact, eBay, Substack, Salesforce, Marketo, SparkPost,
ConvertKit, Iterable, Branch, a self-hosted endpoint, Google Analytics and Facebook pixels)
and on sellers' own mail without trackers (receipts, product grids, layout spacers, social
footers). Every ``<img>`` and ``<a>`` is labelled tracker or content.

Reported beside each other: detection recall and precision (an element the stripper treats as
a tracker: an image it removes, a link it sees as a redirect), how many tracking links were
neutralised (replaced by their destination) versus left working because their destination
is an opaque token, and the stripping time per message beside the time just to parse it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from selectolax.lexbor import LexborHTMLParser

from mailveil.relay.trackers import (
    TRACKER_HOSTS,
    Tally,
    clean_link,
    is_pixel,
    is_redirect,
    strip_html,
)

CORPUS = Path(__file__).resolve().parent / "data" / "trackers_corpus.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=200, help="timing rounds over the corpus")
    parser.add_argument("--quick", action="store_true")
    args, _unknown = parser.parse_known_args()
    if args.quick:
        args.rounds = 5
    cases = json.loads(CORPUS.read_text(encoding="utf-8"))["cases"]
    counts = {k: {"tp": 0, "fp": 0, "fn": 0, "tn": 0} for k in ("img", "a")}
    unwrapped = opaque = 0
    misses: list[str] = []
    for case in cases:
        tree = LexborHTMLParser(case["html"])
        nodes = tree.css("img, a")
        assert len(nodes) == len(case["elements"]), case["name"]
        for node, label in zip(nodes, case["elements"], strict=True):
            kind = label["kind"]
            if kind == "img":
                found = is_pixel(node, TRACKER_HOSTS)
            else:
                found = (
                    is_redirect(label["url"], TRACKER_HOSTS)
                    if label["url"].startswith("http")
                    else False
                )
                if found and label["tracker"]:
                    tally = Tally()
                    clean_link(label["url"], TRACKER_HOSTS, tally)
                    unwrapped += tally.links > 0
                    opaque += tally.opaque > 0
            truth = label["tracker"]
            key = ("tp" if found else "fn") if truth else ("fp" if found else "tn")
            counts[kind][key] += 1
            if key in ("fp", "fn"):
                misses.append(f"{key} {kind} {case['name']}: {label['url'][:70]}")
    console = Console(width=max(110, Console().width))
    table = Table(title=f"tracker stripping: {len(cases)} messages, "
                  f"{sum(len(c['elements']) for c in cases)} labelled elements")  # fmt: skip
    for column in ("elements", "trackers", "found", "missed", "false alarms", "recall",
                   "precision"):  # fmt: skip
        table.add_column(column, justify="right" if column != "elements" else "left")
    total = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    for kind, name in (("img", "pixels (img)"), ("a", "redirects (a)")):
        c = counts[kind]
        for k in total:
            total[k] += c[k]
        table.add_row(name, *_row(c))
    table.add_row("all", *_row(total))
    console.print(table)
    console.print(
        f"tracking links neutralised (replaced by their destination): {unwrapped}; "
        f"left working (opaque destination): {opaque}"
    )
    for line in misses:
        console.print(f"  {line}", highlight=False)
    started = time.perf_counter()
    for _ in range(args.rounds):
        for case in cases:
            strip_html(case["html"])
    strip_ms = (time.perf_counter() - started) * 1000 / (args.rounds * len(cases))
    started = time.perf_counter()
    for _ in range(args.rounds):
        for case in cases:
            LexborHTMLParser(case["html"]).html  # noqa: B018  (the peer: parse and serialise)
    parse_ms = (time.perf_counter() - started) * 1000 / (args.rounds * len(cases))
    console.print(
        f"time per message: strip {strip_ms:.3f} ms beside parse+serialise {parse_ms:.3f} ms"
    )
    return 0


def _row(c: dict[str, int]) -> list[str]:
    trackers = c["tp"] + c["fn"]
    found = c["tp"] + c["fp"]
    recall = c["tp"] / trackers if trackers else 1.0
    precision = c["tp"] / found if found else 1.0
    return [str(trackers), str(c["tp"]), str(c["fn"]), str(c["fp"]), f"{recall:.1%}",
            f"{precision:.1%}"]  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
