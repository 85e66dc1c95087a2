"""A held message as inert text for a person to read: its headers, the text of each part
(HTML reduced to its visible text, so nothing remote loads and no markup runs) and what
attachments it carries. Reading never changes the file or the ledger."""

from __future__ import annotations

from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import Message

from mailveil.config import Settings
from mailveil.detect.intake_inline import html_to_text
from mailveil.relay import quarantine

SHOWN_HEADERS = ("From", "Sender", "Reply-To", "To", "Cc", "Subject", "Date", "Message-ID")
TEXT_BUDGET = 200_000  # characters of text shown per part
MAX_PARTS = 50


@dataclass
class MessageView:
    sha256: str
    size: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    parts: list[tuple[str, str]] = field(default_factory=list)  # (content type, text)
    attachments: list[tuple[str, str, int]] = field(default_factory=list)  # name, type, bytes
    remote_references: int = 0  # links and images in HTML parts, none of them loaded


def _text(part: Message) -> str:
    try:
        payload = part.get_payload(decode=True)
    except Exception:  # a malformed transfer encoding is shown as what it is
        return "(this part could not be decoded)"
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("utf-8", errors="replace")


def _size(part: Message) -> int:
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        return 0
    return len(payload) if isinstance(payload, bytes) else 0


def inert_view(settings: Settings, sha256: str) -> MessageView:
    raw = quarantine.read(settings.data_dir, sha256)
    message = message_from_bytes(raw, policy=policy.default)
    view = MessageView(sha256=quarantine.check_sha(sha256), size=len(raw))
    for name in SHOWN_HEADERS:
        for value in message.get_all(name) or ():
            view.headers.append((name, str(value)[:2000]))
    for n, part in enumerate(message.walk()):
        if n >= MAX_PARTS:
            break
        if part.is_multipart():
            continue
        kind = part.get_content_type()
        filename = part.get_filename()
        if filename or part.get_content_disposition() == "attachment":
            view.attachments.append((str(filename or "(no name)"), kind, _size(part)))
            continue
        if kind == "text/html":
            html = _text(part)
            lowered = html.lower()
            view.remote_references += lowered.count("src=") + lowered.count("href=")
            view.parts.append((kind, html_to_text(html, TEXT_BUDGET)[:TEXT_BUDGET]))
        elif kind.startswith("text/"):
            view.parts.append((kind, _text(part)[:TEXT_BUDGET]))
        else:
            view.attachments.append(("(inline part)", kind, _size(part)))
    return view


__all__ = ["MessageView", "inert_view"]
