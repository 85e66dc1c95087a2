"""The regulator report as the console shows it, behind one small interface.

``ReportSource`` is the seam: ``build`` gives the report as plain data, ``document`` the
document a privacy officer files. The console renders whatever ``build`` returns, section
by section: the report's summary in words (``incidents.regulator.summary``), while the HTML
and PDF documents render the whole report it holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.incidents.regulator import regulator_report, render_html, summary


@dataclass(frozen=True)
class Download:
    name: str  # URL segment under /console/incidents/<id>/report/
    label: str
    media_type: str


class ReportSource(Protocol):
    downloads: tuple[Download, ...]

    def build(self, session: Session, settings: Settings, incident_id: int) -> Mapping[str, Any]:
        """The report as JSON-ready data (sections in display order)."""

    def document(self, report: Mapping[str, Any], name: str) -> bytes:
        """One of ``downloads``, rendered."""


class Summarised(dict[str, Any]):
    """The report in words (what the page lists), holding the whole report (what the
    documents render)."""

    def __init__(self, full: dict[str, Any]) -> None:
        super().__init__(summary(full))
        self.full = full


class FullReport:
    """The report of ``mailveil.incidents.regulator``: a summary on the page, the document
    as HTML and PDF."""

    downloads: tuple[Download, ...] = (
        Download("document.html", "HTML document", "text/html; charset=utf-8"),
        Download("document.pdf", "PDF document", "application/pdf"),
    )

    def build(self, session: Session, settings: Settings, incident_id: int) -> Mapping[str, Any]:
        return Summarised(regulator_report(session, settings, incident_id))

    def document(self, report: Mapping[str, Any], name: str) -> bytes:
        full = report.full if isinstance(report, Summarised) else dict(report)
        if name == "document.pdf":
            from mailveil.incidents.report_pdf import render_pdf  # Pango only when asked

            return render_pdf(full)
        return render_html(full).encode("utf-8")


REPORTS: ReportSource = FullReport()

__all__ = ["REPORTS", "Download", "FullReport", "ReportSource", "Summarised"]
