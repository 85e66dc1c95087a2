"""How the report says things to a person: times with their zone ("6 December 2026, 14:03
UTC"), durations ("2 days and 5 hours"), counts with the right plural ("1 person", "3
people"), and statuses in words. The JSON keeps ISO timestamps beside each text for machines.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mailveil.errors import InvalidInput

MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)

# Irregular plurals the report uses; everything else takes an "s".
PLURALS = {"person": "people", "entity": "entities", "authority": "authorities"}

STATUS_WORDS = {
    "open": "open (not yet confirmed)",
    "confirmed": "confirmed",
    "contained": "contained",
    "closed": "closed",
    "dismissed": "dismissed (not a breach)",
}


def zone(name: str) -> ZoneInfo:
    """The IANA time zone the report is written in (the ``report_timezone`` setting)."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidInput(
            f"unknown time zone {name!r} (an IANA name, e.g. Europe/Dublin)"
        ) from exc


def _offset(moment: datetime) -> str:
    delta = moment.utcoffset() or timedelta(0)
    minutes = int(delta.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    hours, rest = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours}" + (f":{rest:02d}" if rest else "")


def when(moment: datetime | None, tz: ZoneInfo | None = None) -> str:
    """ "6 December 2026, 14:03 UTC"; in another zone its abbreviation and offset follow
    ("6 December 2026, 15:03 CET (UTC+1)"). Minutes, never seconds or microseconds."""
    if moment is None:
        return "not recorded"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    local = moment.astimezone(tz or UTC)
    day = f"{local.day} {MONTHS[local.month - 1]} {local.year}, {local.hour:02d}:{local.minute:02d}"
    if tz is None or tz.key == "UTC":
        return f"{day} UTC"
    return f"{day} {local.tzname()} ({_offset(local)})"


def plural(count: int, noun: str, many: str | None = None) -> str:
    """ "1 person", "3 people", "0 aliases"; thousands grouped ("12,408 people")."""
    if count == 1:
        return f"1 {noun}"
    if many is None:
        many = PLURALS.get(noun) or (
            noun + "es" if noun.endswith(("s", "sh", "ch")) else noun + "s"
        )
    return f"{count:,} {many}"


def duration(delta: timedelta) -> str:
    """A span in the two largest units that matter: "2 days and 5 hours", "41 hours" below
    three days (the 72-hour clock reads in hours), "25 minutes"."""
    minutes = int(abs(delta).total_seconds() // 60)
    hours, mins = divmod(minutes, 60)
    if hours < 1:
        return plural(mins, "minute")
    if hours < 72:
        text = plural(hours, "hour")
        return text if not mins or hours >= 10 else f"{text} and {plural(mins, 'minute')}"
    days, hours = divmod(hours, 24)
    text = plural(days, "day")
    return text if not hours else f"{text} and {plural(hours, 'hour')}"


def due_words(due: datetime, now: datetime) -> str:
    """ "due in 41 hours" or "overdue by 2 days and 3 hours"."""
    if due >= now:
        return f"due in {duration(due - now)}"
    return f"overdue by {duration(now - due)}"


def status_words(status: str) -> str:
    return STATUS_WORDS.get(status, status)


def join(items: list[str], last: str = "and") -> str:
    """ "a", "a and b", "a, b and c"."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + f" {last} " + items[-1]


__all__ = [
    "STATUS_WORDS",
    "due_words",
    "duration",
    "join",
    "plural",
    "status_words",
    "when",
    "zone",
]
