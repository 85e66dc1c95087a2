"""The regulator report as the console shows it, behind one small interface.

``ReportSource`` is the seam: ``build`` gives the report as plain data, ``document`` the
document a privacy officer files (HTML today). The console renders whatever ``build``
returns, section by section, so a richer report (jurisdiction deadlines, severity score,
phased updates, PDF) drops in by replacing ``REPORTS`` with its own source; its
``downloads`` name the extra documents to offer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.incidents.regulator import regulator_report, render_html


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


class CurrentReport:
    """Today's report from ``mailveil.incidents.regulator``."""

    downloads: tuple[Download, ...] = (
        Download("document.html", "HTML document", "text/html; charset=utf-8"),
    )

    def build(self, session: Session, settings: Settings, incident_id: int) -> Mapping[str, Any]:
        return regulator_report(session, settings, incident_id)

    def document(self, report: Mapping[str, Any], name: str) -> bytes:
        return render_html(dict(report)).encode("utf-8")


REPORTS: ReportSource = CurrentReport()

__all__ = ["REPORTS", "CurrentReport", "Download", "ReportSource"]
