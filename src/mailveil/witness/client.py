"""The log side's HTTP client of tlog-witness ``add-checkpoint`` (standard library only:
one request a minute per witness needs no connection pool). HTTPS verifies the witness's
certificate against the system's CAs."""

from __future__ import annotations

import base64
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

MAX_ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True)
class Answer:
    status: int
    body: str
    content_type: str


class WitnessUnreachable(OSError):
    """No HTTP answer: refused connection, timeout, TLS failure."""


def submission_body(old_size: int, proof: Sequence[bytes], note: str) -> bytes:
    lines = [f"old {old_size}", *(base64.b64encode(p).decode() for p in proof)]
    return ("".join(line + "\n" for line in lines) + "\n" + note).encode("utf-8")


def add_checkpoint(
    url: str, old_size: int, proof: Sequence[bytes], note: str, *, timeout: float
) -> Answer:
    """POST ``<url>/add-checkpoint``; any HTTP status is an answer, no answer raises."""
    request = urllib.request.Request(  # noqa: S310 - the URL is a configured http(s) witness
        url.rstrip("/") + "/add-checkpoint",
        data=submission_body(old_size, proof, note),
        method="POST",
        headers={"Content-Type": "text/plain; charset=utf-8"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return _answer(response.status, response.read(MAX_ANSWER_BYTES), response.headers)
    except urllib.error.HTTPError as exc:
        with exc:
            return _answer(exc.code, exc.read(MAX_ANSWER_BYTES), exc.headers)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise WitnessUnreachable(f"no answer from {url}: {reason}") from exc


def _answer(status: int, body: bytes, headers: object) -> Answer:
    content_type = ""
    get = getattr(headers, "get", None)
    if get is not None:
        content_type = str(get("Content-Type", "") or "")
    return Answer(status, body.decode("utf-8", errors="replace"), content_type)


__all__ = ["Answer", "WitnessUnreachable", "add_checkpoint", "submission_body"]
