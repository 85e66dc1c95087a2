"""Tracking pixels and click-tracking redirects in sellers' mail to customers, removed or
neutralised (as DuckDuckGo Email Protection and Firefox Relay do).

In every ``text/html`` part (not inside a signed or encrypted part, whose signature the change
would break):

Pixels
    An ``<img>`` is a tracking pixel when it is at most 2x2 pixels (``width``/``height``
    attributes or inline CSS), hidden (``display:none``, ``visibility:hidden``,
    ``opacity:0``), or loaded from a known open-tracking host or path (``_PIXEL_PATHS``,
    ``TRACKER_HOSTS``). It is removed.
Click-tracking redirects
    A link through a known redirector (``TRACKER_HOSTS``, or a path such as ``/ls/click``)
    whose destination is in the link (a ``url=``-style parameter or an encoded path segment,
    as Amazon SES and eBay write it) is replaced by that destination. Either way the known
    tracking parameters (``utm_*``, ``mc_eid``, ``_hsenc``...) are dropped from every link.
    A redirector whose destination is opaque (an encrypted token) is left working: removing
    it would break the link; it is counted as ``opaque``.

Only changed parts are rewritten. ``Tally`` counts what was done, per message; the relay
keeps the counts per seller and day (``platform.trackers``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from selectolax.lexbor import LexborHTMLParser, LexborNode

from mailveil.config import Settings

# Hosts (and their subdomains) that only serve opens and clicks for mail senders.
TRACKER_HOSTS = frozenset(
    {
        "list-manage.com", "mailchimp.com", "mandrillapp.com", "mcsv.net",
        "sendgrid.net", "ct.sendgrid.net", "mailgun.org", "mailgun.net",
        "klaviyomail.com", "klclick.com", "klclick1.com", "klclick2.com", "klclick3.com",
        "hubspotlinks.com", "hubspotemail.net", "hs-analytics.net", "hsms06.com",
        "exct.net", "exacttarget.com", "awstrack.me", "sparkpostmail.com", "spgo.io",
        "mjt.lu", "sendibt2.com", "sendibt3.com", "sendibm1.com", "rs6.net",
        "createsend1.com", "cmail19.com", "cmail20.com", "convertkit-mail.com",
        "convertkit-mail2.com", "customeriomail.com", "track.customer.io", "mailtrack.io",
        "getnotify.com", "bananatag.com", "yesware.com", "mixmax.com", "pstmrk.it",
        "links.iterable.com", "emltrk.com", "rover.ebay.com", "email-analytics.io",
        "google-analytics.com", "doubleclick.net", "facebook.com/tr", "omtrdc.net",
        "mktoresp.com", "mkt4477.com", "mktdns.com", "postmarkapp.com/o",
        "shopifyemail.com", "e.customeriomail.com", "bnc.lt", "app.link",
        "sendgrid.com", "mailjet.com", "brevo.com", "sib.email", "emarsys.net",
        "eloqua.com", "en25.com", "pardot.com", "sailthru.com", "responsys.net",
        "rsys5.com", "bronto.com", "cordial.io", "braze.com", "appboy.com",
        "substack.com/redirect",
    }
)  # fmt: skip
# Path shapes of open and click tracking whatever the host (a sender's own tracking domain,
# e.g. email.mg.shop.example or click.e.shop.example).
_PIXEL_PATHS = re.compile(
    r"(?ix) ( /track/open | /wf/open | /e/o/ | /o/ | /open\.php | /open\.aspx | /open/ |"
    r" /pixel | /beacon | /t\.gif | /o\.gif | /open\.gif | /trk | /tr/op | /imp\b |"
    r" /e/eo | /mo/ | /ss/o/ | /q/ )"
)
_CLICK_PATHS = re.compile(
    r"(?ix) ( /ls/click | /track/click | /c/ | /click/ | /e/c/ | /l/ | /ss/c/ | /tr/cl |"
    r" /tn\.jsp | /redirect | /r/ | /wf/click | /CL0/ | /L0/ | /rover/ | /t/ )"
)
_CLICK_HOST_PREFIXES = ("click.", "clicks.", "links.", "link.", "trk.", "track.", "ct.", "em.",
                        "email.", "e.", "url", "go.")  # fmt: skip
# Parameters that carry only tracking (dropped from every link).
_TRACKING_PARAMS = re.compile(
    r"(?i)^(utm_[a-z_]+|mc_cid|mc_eid|_hsenc|_hsmi|hsctatracking|__hs[a-z_]*|fbclid|gclid|"
    r"dclid|msclkid|mkt_tok|vero_id|vero_conv|oly_enc_id|oly_anon_id|_ke|_kx|trk|trkcampaign|"
    r"sc_campaign|sc_channel|ck_subscriber_id|yclid|igshid|wickedid|ml_subscriber|"
    r"ml_subscriber_hash|s_cid|cmpid|elqtrackid|elqtrack|elq|sfmc_id|rfsn|_branch_match_id)$"
)
# Parameters that name the destination of a redirect.
_DEST_PARAMS = ("url", "u", "redirect", "redirect_url", "redirecturl", "target", "dest",
                "destination", "to", "link", "mpre", "loc", "q", "r", "goto", "href")  # fmt: skip
_CSS_SIZE = re.compile(r"(?i)\b(width|height|max-width|max-height)\s*:\s*([0-9.]+)\s*(px)?\b")
_HIDDEN = re.compile(r"(?i)(display\s*:\s*none|visibility\s*:\s*hidden|opacity\s*:\s*0(?:\.0+)?\b)")
_SIGNED = ("multipart/signed", "multipart/encrypted", "application/pkcs7-mime")


@dataclass
class Tally:
    pixels: int = 0  # tracking images removed
    links: int = 0  # redirects replaced by their destination
    opaque: int = 0  # redirects left (destination not in the link)
    params: int = 0  # tracking parameters dropped
    hosts: set[str] = field(default_factory=set)

    @property
    def changed(self) -> bool:
        return bool(self.pixels or self.links or self.params)

    def add(self, other: Tally) -> None:
        self.pixels += other.pixels
        self.links += other.links
        self.opaque += other.opaque
        self.params += other.params
        self.hosts |= other.hosts


@functools.cache
def _host_index(hosts: frozenset[str]) -> dict[str, tuple[str, ...]]:
    """name -> path prefixes ("" for any path), so a lookup walks the host's own labels."""
    index: dict[str, list[str]] = {}
    for known in hosts:
        name, _, prefix = known.partition("/")
        index.setdefault(name, []).append(prefix)
    return {name: tuple(prefixes) for name, prefixes in index.items()}


def _host_in(host: str, hosts: frozenset[str], path: str = "") -> bool:
    index = _host_index(hosts)
    labels = host.lower().strip(".").split(".")
    for start in range(len(labels)):
        prefixes = index.get(".".join(labels[start:]))
        if prefixes is not None:
            lowered = path.lstrip("/").lower()
            if any(not p or lowered.startswith(p) for p in prefixes):
                return True
    return False


def _size(value: str | None) -> float | None:
    if value is None:
        return None
    match = re.match(r"\s*([0-9.]+)", value)
    if not match:
        return None
    try:
        return float(match.group(1))
    except ValueError:
        return None


def is_pixel(img: LexborNode, hosts: frozenset[str]) -> bool:
    attrs = img.attributes
    style = attrs.get("style") or ""
    width, height = _size(attrs.get("width")), _size(attrs.get("height"))
    for prop, value, _unit in _CSS_SIZE.findall(style):
        number = float(value) if value.replace(".", "", 1).isdigit() else None
        if prop.lower() in ("width", "max-width") and number is not None:
            width = number if width is None else min(width, number)
        elif number is not None:
            height = number if height is None else min(height, number)
    if width is not None and height is not None and width <= 2 and height <= 2:
        return True
    if (width is not None and width == 0) or (height is not None and height == 0):
        return True
    if _HIDDEN.search(style) or "hidden" in attrs:
        return True
    src = (attrs.get("src") or "").strip()
    if not src.lower().startswith(("http://", "https://", "//")):
        return False  # cid: and data: images come with the message
    parts = urlsplit(src if not src.startswith("//") else "https:" + src)
    if _host_in(parts.hostname or "", hosts, parts.path):
        return True
    # A sender's own tracking domain: an open-tracking path with a token, no image name.
    path = parts.path or "/"
    looks_like_image = bool(re.search(r"(?i)\.(png|jpe?g|gif|webp|svg)$", path))
    return bool(_PIXEL_PATHS.search(path)) and (not looks_like_image or "open" in path.lower())


def _destination(parts: object) -> str | None:
    assert hasattr(parts, "query") and hasattr(parts, "path")
    for name, value in parse_qsl(parts.query, keep_blank_values=False):
        if name.lower() in _DEST_PARAMS:
            target = value if value.lower().startswith(("http://", "https://")) else unquote(value)
            if target.lower().startswith(("http://", "https://")):
                return target
    for segment in parts.path.split("/"):
        decoded = unquote(segment)
        if decoded.lower().startswith(("http://", "https://")):
            return decoded
    return None


def is_redirect(href: str, hosts: frozenset[str]) -> bool:
    parts = urlsplit(href)
    host = (parts.hostname or "").lower()
    if _host_in(host, hosts, parts.path):
        return True
    if _destination(parts) is not None and _CLICK_PATHS.search(parts.path or ""):
        return True
    if host.startswith(("click.", "clicks.")):
        return True  # a subdomain named for click tracking (Salesforce, Exact Target...)
    return host.startswith(_CLICK_HOST_PREFIXES) and bool(_CLICK_PATHS.search(parts.path or ""))


def clean_link(href: str, hosts: frozenset[str], tally: Tally) -> str:
    """The link with its redirect unwrapped (when it can be) and tracking parameters gone."""
    url = href.strip()
    if not url.lower().startswith(("http://", "https://")):
        return href
    for _ in range(3):  # a redirect to a redirect
        if not is_redirect(url, hosts):
            break
        target = _destination(urlsplit(url))
        if target is None:
            tally.opaque += 1
            tally.hosts.add((urlsplit(url).hostname or "").lower())
            return href
        tally.links += 1
        tally.hosts.add((urlsplit(url).hostname or "").lower())
        url = target
    parts = urlsplit(url)
    if parts.query:
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        kept = [(k, v) for k, v in pairs if not _TRACKING_PARAMS.match(k)]
        if len(kept) != len(pairs):
            tally.params += len(pairs) - len(kept)
            url = urlunsplit(parts._replace(query=urlencode(kept)))
    return url


def strip_html(html: str, hosts: frozenset[str] = TRACKER_HOSTS) -> tuple[str, Tally]:
    """``html`` without its pixels and with clean links; unchanged text if nothing was found."""
    tally = Tally()
    tree = LexborHTMLParser(html)
    for img in tree.css("img"):
        if is_pixel(img, hosts):
            src = img.attributes.get("src") or ""
            tally.hosts.add((urlsplit(src).hostname or "").lower())
            img.decompose()
            tally.pixels += 1
    for link in tree.css("a[href], area[href]"):
        href = link.attributes.get("href") or ""
        cleaned = clean_link(href, hosts, tally)
        if cleaned != href:
            link.attrs["href"] = cleaned
    if not tally.changed:
        return html, tally
    return tree.html or html, tally


def _html_parts(message: Message) -> Iterator[Message]:
    """``text/html`` leaves, skipping everything under a signed or encrypted part."""
    ctype = message.get_content_type()
    if ctype in _SIGNED:
        return
    if message.is_multipart():
        for part in message.get_payload() or []:
            if isinstance(part, Message):
                yield from _html_parts(part)
        return
    if ctype == "text/html" and message.get_content_disposition() != "attachment":
        yield message


def strip_message(message: Message, extra_hosts: frozenset[str] = frozenset()) -> Tally:
    """Strip trackers from every HTML part of ``message`` in place; what was done."""
    hosts = TRACKER_HOSTS | extra_hosts
    total = Tally()
    for part in _html_parts(message):
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        charset = part.get_content_charset() or "utf-8"
        try:
            text = payload.decode(charset)
        except (LookupError, UnicodeDecodeError):
            continue  # a part we cannot read faithfully is left as it is
        cleaned, tally = strip_html(text, hosts)
        if tally.changed:
            del part["Content-Transfer-Encoding"]
            part.set_payload(cleaned, charset="utf-8")
        total.add(tally)
    return total


@functools.cache
def parse_hosts(text: str) -> frozenset[str]:
    return frozenset(h.strip().lower().strip(".") for h in text.split(",") if h.strip())


def strip_for_customer(settings: Settings, message: Message) -> dict[str, int] | None:
    """The relay's call (``decide``, for a principal's message to a customer): strip when
    ``trackers_strip`` is on; the counts for the message's ledger entry, or None when there
    was nothing to count."""
    if not settings.trackers_strip:
        return None
    tally = strip_message(message, parse_hosts(settings.trackers_extra_hosts))
    if not (tally.changed or tally.opaque):
        return None
    return {"pixels": tally.pixels, "links": tally.links, "opaque": tally.opaque,
            "params": tally.params}  # fmt: skip


__all__ = [
    "TRACKER_HOSTS",
    "Tally",
    "clean_link",
    "is_pixel",
    "is_redirect",
    "parse_hosts",
    "strip_for_customer",
    "strip_html",
    "strip_message",
]
