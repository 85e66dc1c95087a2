"""The report as documents and files: the exact list of affected people verifies from itself
and every edit of it fails; the PDF holds the report's text (read back with pypdf) and loads
nothing; and whatever text a user supplied, the HTML shows it as text (generated attacks)."""

from __future__ import annotations

import io
import json
from html.parser import HTMLParser
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pypdf import PdfReader
from report_testkit import CONTROLLER, make_leak
from sqlalchemy.orm import Session
from weasyprint import HTML

from mailveil.detect.incidents import set_status
from mailveil.incidents.blast import blast_radius, culprits_of
from mailveil.incidents.controller import set_controller
from mailveil.incidents.proofs import verify_affected, write_affected
from mailveil.incidents.regulator import regulator_report, render_html
from mailveil.incidents.report_pdf import NoFetching, render_pdf


def _rendering_only_on_sqlite(session: Session) -> None:
    # Rendering reads a finished report: the database behind it does not change it (the
    # report's data is tested on both backends), and WeasyPrint costs seconds a document.
    if session.get_bind().dialect.name != "sqlite":
        pytest.skip("rendering does not depend on the backend")


def _export(session: Session, parts: Any, incident_id: int, leaves: bool) -> list[str]:
    settings, _v, ledger, _p = parts
    out = io.StringIO()
    write_affected(session, settings, ledger, incident_id, out, with_leaves=leaves)
    return out.getvalue().splitlines()


def test_the_exact_list_of_affected_people_verifies_and_edits_fail(
    session: Session, parts: Any
) -> None:
    _settings, _v, ledger, _p = parts
    leak = make_leak(session, parts)
    lines = _export(session, parts, leak.incident_id, leaves=True)
    header, people, trailer = json.loads(lines[0]), lines[1:-1], json.loads(lines[-1])
    radius = blast_radius(session, culprits_of(session, leak.incident_id), sample=0)
    assert len(people) == radius.customers == trailer["people"] == 9
    rows = [json.loads(p) for p in people]
    assert {r["external_id"] for r in rows} == {c.external_id for c in leak.customers}
    assert all(r["entries"] and not r["unproven"] for r in rows)
    assert {json.loads(e["leaf"])["kind"] for r in rows for e in r["entries"]} == {"disclosure"}
    text = "\n".join(lines)
    for email in leak.emails:
        assert email not in text
    check = verify_affected(lines, verifier_key=ledger.signer.verifier_key)
    assert check.ok, check.checks
    assert header["checkpoint"]["verifier_key"] == ledger.signer.verifier_key

    def fails(edited: list[str]) -> bool:
        return not verify_affected(edited, verifier_key=ledger.signer.verifier_key).ok

    # Another person's entry claimed for someone; a proof hash flipped; a line cut.
    swapped = [json.loads(p) for p in people]
    swapped[0]["entries"], swapped[1]["entries"] = swapped[1]["entries"], swapped[0]["entries"]
    assert fails([lines[0], *(json.dumps(p) for p in swapped), lines[-1]])
    flipped = json.loads(people[3])
    first = flipped["entries"][0]["proof"][0]
    flipped["entries"][0]["proof"][0] = ("0" if first[0] != "0" else "1") + first[1:]
    assert fails([lines[0], *people[:3], json.dumps(flipped), *people[4:], lines[-1]])
    assert fails(lines[:-2] + lines[-1:])  # a person dropped: the trailer no longer matches
    assert fails(lines[:-1])  # no trailer
    assert fails(["{}"])
    # Another key is refused (the list is pinned to the operator's).
    other = verify_affected(lines, verifier_key=ledger.signer.verifier_key.replace("+", "/", 1))
    assert not other.ok
    # Without leaves the proofs still verify, with a warning that claims are unchecked.
    bare = _export(session, parts, leak.incident_id, leaves=False)
    quiet = verify_affected(bare, verifier_key=ledger.signer.verifier_key)
    assert quiet.ok and any("no leaves" in w for w in quiet.warnings)
    assert all("leaf" not in e for p in bare[1:-1] for e in json.loads(p)["entries"])


def test_the_pdf_carries_the_report_and_loads_nothing(session: Session, parts: Any) -> None:
    _rendering_only_on_sqlite(session)
    settings, _v, ledger, _p = parts
    leak = make_leak(session, parts)
    hostile = '<img src="http://127.0.0.1:9/x"><link rel=stylesheet href="file:///etc/passwd">'
    set_controller(
        session,
        settings=settings,
        ledger=ledger,
        changes={**CONTROLLER, "name": "Example Market GmbH " + hostile},
        actor="dpo",
    )
    fetcher = NoFetching()
    draft = regulator_report(session, settings, leak.incident_id)
    pages = PdfReader(io.BytesIO(render_pdf(draft, fetcher=fetcher))).pages
    text = "\n".join(page.extract_text() for page in pages)
    flat = " ".join(text.split())
    assert fetcher.refused == []  # the markup was text, never an element
    assert text.count("DRAFT") >= len(pages)  # the watermark on every page
    assert "Personal data breach report" in flat and "9 people" in flat
    assert '<img src="http://127.0.0.1:9/x">' in flat
    assert "Data protection officer or contact point Dana Privacy" in flat
    assert draft["timing"]["awareness"]["at_text"] in flat
    for email in leak.emails:
        assert email not in text
    set_status(
        session,
        ledger=ledger,
        incident_id=leak.incident_id,
        status="confirmed",
        reason="confirmed",
        actor="dpo",
    )
    final = PdfReader(io.BytesIO(render_pdf(regulator_report(session, settings, leak.incident_id))))
    final_text = " ".join(" ".join(p.extract_text() for p in final.pages).split())
    assert "DRAFT" not in final_text and "Signature" in final_text
    # The fetcher is what stands between a document and the network: it refuses a URL that
    # reaches it.
    probe = NoFetching()
    HTML(string='<img src="file:///etc/hostname">', url_fetcher=probe).write_pdf()
    assert probe.refused == ["file:///etc/hostname"]


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attrs: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs.update(a for a, _ in attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _strings(value: Any, new: str) -> Any:
    """The report with every text a person could have supplied replaced by ``new``."""
    if isinstance(value, dict):
        return {k: _strings(v, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_strings(v, new) for v in value]
    return new if isinstance(value, str) else value


@pytest.fixture
def sample_report(session: Session, parts: Any) -> tuple[dict[str, Any], set[str]]:
    """A real report, and the tags its document is made of."""
    _rendering_only_on_sqlite(session)
    settings, _v, _ledger, _p = parts
    leak = make_leak(session, parts)
    report = regulator_report(session, settings, leak.incident_id)
    baseline = _Tags()
    baseline.feed(render_html(report))
    return report, baseline.tags


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    attack=st.one_of(
        st.sampled_from(
            [
                "<script>alert(1)</script>",
                '"><img src=x onerror=alert(1)>',
                "</style><script>x()</script>",
                "{{ 7*7 }}{% raw %}",
                "<a href='javascript:alert(1)'>x</a>",
                "<!--",
                "]]><svg onload=x()>",
            ]
        ),
        st.text(alphabet=st.sampled_from(list("<>\"'&/=ab {}%!-;")), min_size=1, max_size=40),
    )
)
def test_whatever_anyone_typed_is_shown_as_text(
    sample_report: tuple[dict[str, Any], set[str]], attack: str
) -> None:
    report, tags = sample_report
    hostile = _strings(report, attack)
    # Keep the structure the template branches on (booleans, numbers) and the report's own
    # keys; every text, from the controller's name to reasons and titles, is the attack.
    parser = _Tags()
    parser.feed(render_html(hostile))
    assert parser.tags <= tags | {"br"}
    assert not any(a.startswith("on") for a in parser.attrs)
    assert "script" not in parser.tags
    assert attack.strip() in "".join(parser.text) or not attack.strip()
