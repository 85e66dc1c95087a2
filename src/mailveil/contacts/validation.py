"""Input checks shared by the contacts functions. Every failure is an InvalidInput naming the
field, never echoing a real address."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from mailveil.errors import InvalidInput

# ISO 3166-1 alpha-2, the 249 officially assigned codes (embedded: a dependency for one list
# is not worth it; it changes a few times a decade).
_ISO_CODES = (
    "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ "
    "BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM "
    "DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS "
    "GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN "
    "KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ "
    "MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM "
    "PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV "
    "SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI "
    "VN VU WF WS YE YT ZA ZM ZW "
)
ISO_COUNTRIES = frozenset(_ISO_CODES.split())

_SLUG = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_EXTERNAL_ID = re.compile(r"[^\x00-\x1f\x7f]{1,255}")
MAX_TAGS = 32


def shown(value: Any) -> str:
    """A caller-supplied value as it may be repeated in a message: quoted when it is short,
    printable text without '@', otherwise not at all (it might be someone's address)."""
    if isinstance(value, str) and len(value) <= 64 and "@" not in value and value.isprintable():
        return repr(value)
    return "(value not repeated)"


def country(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidInput("country must be an ISO 3166-1 alpha-2 code (text)")
    code = value.strip().upper()
    if code not in ISO_COUNTRIES:
        shown = code if re.fullmatch(r"[A-Z]{1,3}", code) else "that value"
        raise InvalidInput(f"country {shown!s} is not an ISO 3166-1 alpha-2 code")
    return code


# US states, DC and the territories (ISO 3166-2:US): the US breach laws apply by state, so a
# US subdivision is checked against the list; elsewhere any 1-3 letter or digit code passes.
_US_CODES = (
    "AL AK AZ AR CA CO CT DE FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH "
    "NJ NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY DC AS GU MP PR UM VI"
)
US_SUBDIVISIONS = frozenset(_US_CODES.split())


def subdivision(value: Any, country_code: str) -> str | None:
    """The ISO 3166-2 subdivision within ``country_code`` ("CA", or "US-CA"), or None."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidInput("subdivision must be an ISO 3166-2 code (text), e.g. US-CA")
    code = value.strip().upper()
    prefix, dash, rest = code.partition("-")
    if dash:
        if prefix != country_code:
            raise InvalidInput(f"subdivision {shown(code)} is not in country {country_code}")
        code = rest
    if not re.fullmatch(r"[A-Z0-9]{1,3}", code):
        raise InvalidInput(f"subdivision {shown(value)} is not an ISO 3166-2 code, e.g. US-CA")
    if country_code == "US" and code not in US_SUBDIVISIONS:
        raise InvalidInput(f"subdivision {shown(code)} is not a US state or territory")
    return code


def external_id(value: Any, what: str = "external_id") -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be text")
    text = value.strip()
    if not text:
        raise InvalidInput(f"{what} is empty")
    if not _EXTERNAL_ID.fullmatch(text):
        raise InvalidInput(f"{what} must be at most 255 characters without control characters")
    if "@" in text:
        # An id that looks like an address would carry one into logs and the ledger.
        raise InvalidInput(f"{what} must not contain '@'")
    return text


def slug(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _SLUG.fullmatch(value):
        raise InvalidInput(
            f"{what} must be 1-64 characters of a-z, 0-9, '_', '.', '-', starting with a "
            "letter or digit"
        )
    return value


def slug_list(value: Any, what: str) -> list[str]:
    """A list of slugs (JSON list, or a ';'/','-separated string from CSV), sorted, unique."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        items: Iterable[Any] = (p.strip() for p in re.split(r"[;,]", value) if p.strip())
    elif isinstance(value, list | tuple):
        items = value
    else:
        raise InvalidInput(f"{what} must be a list of names")
    out = sorted({slug(item, f"each of {what}") for item in items})
    if len(out) > MAX_TAGS:
        raise InvalidInput(f"{what} has more than {MAX_TAGS} entries")
    return out


def boolean(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    if value is None or value == "":
        return False
    if isinstance(value, str):
        text = value.strip().lower()
        if text in {"1", "true", "yes", "y", "t"}:
            return True
        if text in {"0", "false", "no", "n", "f"}:
            return False
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise InvalidInput(f"{what} must be true or false")


def text(value: Any, what: str, limit: int, *, allow_empty: bool = True) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be text")
    out = value.strip()
    if not out and not allow_empty:
        raise InvalidInput(f"{what} is empty")
    if len(out) > limit or any(ord(c) < 32 or ord(c) == 127 for c in out):
        raise InvalidInput(f"{what} must be at most {limit} characters without control characters")
    return out


def choice(value: Any, allowed: Iterable[str], what: str) -> str:
    options = tuple(allowed)
    if not isinstance(value, str) or value not in options:
        raise InvalidInput(f"{what} must be one of: {', '.join(options)}")
    return value


def moment(value: Any, what: str) -> datetime:
    """A timezone-aware datetime, or an ISO 8601 string with an offset (or Z)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput(f"{what} must be an ISO 8601 date-time") from None
    if not isinstance(value, datetime):
        raise InvalidInput(f"{what} must be a date-time")
    if value.tzinfo is None:
        raise InvalidInput(f"{what} must carry a time zone (e.g. Z)")
    return value.astimezone(UTC)


def page_limit(limit: Any, maximum: int = 1000) -> int:
    # Callers ask for one row more than a page to learn whether a next page exists, so a
    # full page of ``maximum`` rows is fetched as ``maximum + 1``.
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= maximum + 1:
        raise InvalidInput(f"limit must be an integer between 1 and {maximum}")
    return limit


__all__ = [
    "ISO_COUNTRIES",
    "boolean",
    "choice",
    "country",
    "external_id",
    "moment",
    "page_limit",
    "shown",
    "slug",
    "slug_list",
    "text",
]
