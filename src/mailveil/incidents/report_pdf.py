"""The regulator report as PDF, rendered from the same HTML by WeasyPrint (a maintained
HTML/CSS-to-PDF engine; it needs Pango, installed by scripts/ensure-debian.sh).

The document loads nothing: every URL it names (there should be none; text the report quotes
is escaped, but a renderer is no place to rely on that alone) is refused by the fetcher, so a
crafted field can neither reach the network nor read a local file."""

from __future__ import annotations

import logging
from typing import Any

from weasyprint import HTML
from weasyprint.urls import URLFetcher, URLFetchingError

from mailveil.incidents.regulator import render_html

log = logging.getLogger(__name__)


class NoFetching(URLFetcher):  # type: ignore[misc]
    """Refuses every URL and remembers which were asked for."""

    def __init__(self) -> None:
        super().__init__(allowed_protocols=())
        self.refused: list[str] = []

    def fetch(self, url: str, headers: Any = None) -> Any:
        self.refused.append(url)
        raise URLFetchingError(f"the report loads nothing: refused {url[:80]!r}")


def render_pdf(report: dict[str, Any], *, fetcher: NoFetching | None = None) -> bytes:
    """The report as a PDF document (A4, page numbers, a DRAFT watermark on each page of a
    draft)."""
    fetcher = fetcher or NoFetching()
    title = f"Personal data breach report, incident {report['incident']['id']}"
    html = HTML(string=render_html(report), url_fetcher=fetcher, base_url="about:blank")
    pdf: bytes = html.write_pdf(pdf_identifier=None, custom_metadata=False) or b""
    if fetcher.refused:
        log.warning("report %s named %d URL(s); none was loaded", title, len(fetcher.refused))
    return pdf


__all__ = ["NoFetching", "render_pdf"]
