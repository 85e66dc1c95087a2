"""Refusals raised while reading or rewriting a message, each carrying its SMTP reply.

The server turns any ``RelayRefusal`` into ``str(exc.reply)``; details are for logs and name
header fields or counts, never an address.
"""

from __future__ import annotations

from mailveil.errors import InvalidInput
from mailveil.relay import codes
from mailveil.relay.codes import Reply


class RelayRefusal(InvalidInput):
    code = "message-refused"
    title = "Message refused"
    reply: Reply = codes.BAD_CONTENT

    def __init__(self, detail: str = "", *, reply: Reply | None = None) -> None:
        if reply is not None:
            self.reply = reply
        super().__init__(detail or self.reply.text)


class BareLineEnding(RelayRefusal):
    code = "bare-line-ending"
    reply = codes.BARE_LF


class NulInData(RelayRefusal):
    code = "nul-in-data"
    reply = codes.NUL_IN_DATA


class MalformedMessage(RelayRefusal):
    code = "malformed-message"
    reply = codes.BAD_CONTENT


class MissingFrom(MalformedMessage):
    code = "missing-from"
    reply = codes.MISSING_FROM


class DuplicateFrom(MalformedMessage):
    code = "duplicate-from"
    reply = codes.DUPLICATE_FROM


class HeaderNotUtf8(MalformedMessage):
    code = "header-not-utf8"
    reply = codes.HEADER_NOT_UTF8


class HeaderInjection(MalformedMessage):
    code = "header-injection"
    reply = codes.HEADER_INJECTION


class AddressNotHidden(RelayRefusal):
    """A real address shows in a part that cannot be rewritten (signed, binary, OpenPGP) or
    still shows after rewriting; ``reply`` names the part (``codes.part_refusal``)."""

    code = "address-not-hidden"

    def __init__(self, template: Reply, part: str) -> None:
        reply = codes.part_refusal(template, part)
        super().__init__(reply.text, reply=reply)


class LimitExceeded(RelayRefusal):
    code = "limit-exceeded"
    reply = codes.MESSAGE_TOO_BIG


class TooManyHeaders(LimitExceeded):
    code = "too-many-headers"
    reply = codes.TOO_MANY_HEADERS


class HeaderLineTooLong(LimitExceeded):
    code = "header-line-too-long"
    reply = codes.HEADER_LINE_TOO_LONG


class HeaderSectionTooBig(LimitExceeded):
    code = "header-section-too-big"
    reply = codes.HEADER_SECTION_TOO_BIG


class MimeTooDeep(LimitExceeded):
    code = "mime-too-deep"
    reply = codes.MIME_TOO_DEEP


class TooManyParts(LimitExceeded):
    code = "too-many-parts"
    reply = codes.TOO_MANY_PARTS


class HeaderTooComplex(LimitExceeded):
    """Too many parameters or encoded-words in a field, or Received fields in a section
    (``prescan``); ``reply`` names which."""

    code = "header-too-complex"
    reply = codes.TOO_MANY_PARAMETERS


class MessageTooBig(LimitExceeded):
    code = "message-too-big"
    reply = codes.MESSAGE_TOO_BIG


__all__ = [
    "AddressNotHidden",
    "BareLineEnding",
    "DuplicateFrom",
    "HeaderInjection",
    "HeaderLineTooLong",
    "HeaderNotUtf8",
    "HeaderSectionTooBig",
    "HeaderTooComplex",
    "LimitExceeded",
    "MalformedMessage",
    "MessageTooBig",
    "MimeTooDeep",
    "MissingFrom",
    "NulInData",
    "RelayRefusal",
    "TooManyHeaders",
    "TooManyParts",
]
