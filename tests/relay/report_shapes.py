"""The shapes in which customers report a message: every common client's inline forward,
attachments, ARF feedback reports, pasted headers, redirects and the body alone.

Plain functions without test dependencies, so benchmarks (``leak_scenarios``) use the same
shapes as the tests (``framing_kit``)."""

from __future__ import annotations

import email
import email.policy
import email.utils
from email.message import EmailMessage, Message

# Every shape a customer may report a message in, with the outcome relayed mail must get:
# the body alone carries no original to find, so it accuses no one either way.
SHAPES = (
    "rfc822",
    "eml-base64",
    "gmail",
    "outlook",
    "outlook-html",
    "apple",
    "thunderbird",
    "yahoo",
    "arf",
    "arf-fields-only",
    "headers-only",
    "redirect",
    "body-only",
)


def as_delivered(mail_from: str, data: bytes) -> bytes:
    """A message as the recipient's mailbox keeps it: Return-Path added on delivery."""
    return f"Return-Path: <{mail_from}>\r\n".encode() + data


def _parsed(raw: bytes) -> EmailMessage:
    out = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(out, EmailMessage)
    return out


def _visible(original: EmailMessage) -> dict[str, str]:
    sender = original["From"].addresses[0]
    return {
        "name": sender.display_name or sender.username,
        "from": sender.addr_spec,
        "to": ", ".join(a.addr_spec for a in original["To"].addresses),
        "subject": str(original["Subject"] or ""),
        "date": str(original["Date"] or ""),
        "body": _text(original),
    }


def _text(message: Message) -> str:
    assert isinstance(message, EmailMessage)
    body = message.get_body(("plain",))
    return body.get_content() if isinstance(body, EmailMessage) else ""


def _wrapper(reporter: str, abuse: str, subject: str) -> EmailMessage:
    report = EmailMessage()
    report["From"] = reporter
    report["To"] = abuse
    report["Subject"] = f"Fwd: {subject}"
    report["Date"] = email.utils.formatdate(usegmt=True)
    report["Message-ID"] = email.utils.make_msgid(domain="client.example")
    return report


def report_of(shape: str, original: bytes, *, reporter: str, abuse: str) -> bytes:
    """A customer's report of ``original`` (bytes as their mailbox holds them) in ``shape``."""
    msg = _parsed(original)
    v = _visible(msg)
    when = email.utils.parsedate_to_datetime(v["date"]) if v["date"] else None
    report = _wrapper(reporter, abuse, v["subject"])
    if shape == "rfc822":
        report.set_content("This is spam, please stop it.\n")
        report.add_attachment(msg)
    elif shape == "eml-base64":
        report.set_content("See the attached message.\n")
        report.add_attachment(
            original, maintype="application", subtype="octet-stream", filename="spam.eml"
        )
    elif shape == "gmail":
        stamp = when.strftime("%a, %b %-d, %Y at %-I:%M %p") if when else v["date"]
        report.set_content(
            "spam again\n\n---------- Forwarded message ---------\n"
            f"From: {v['name']} <{v['from']}>\nDate: {stamp}\nSubject: {v['subject']}\n"
            f"To: <{v['to']}>\n\n\n{v['body']}"
        )
    elif shape == "outlook":
        stamp = when.strftime("%A, %B %-d, %Y %-I:%M %p") if when else v["date"]
        report.set_content(
            "Please look into this.\n\n-----Original Message-----\n"
            f"From: {v['name']} <{v['from']}>\nSent: {stamp}\nTo: {v['to']}\n"
            f"Subject: {v['subject']}\n\n{v['body']}"
        )
    elif shape == "outlook-html":
        stamp = when.strftime("%A, %B %-d, %Y %-I:%M %p") if when else v["date"]
        report.set_content("see below\n")
        report.add_alternative(
            "<html><body><p>Spam</p><div style='border-top:solid #E1E1E1 1.0pt'><p>"
            f"<b>From:</b> {v['name']} &lt;{v['from']}&gt;<br><b>Sent:</b> {stamp}<br>"
            f"<b>To:</b> {v['to']}<br><b>Subject:</b> {v['subject']}</p></div>"
            f"<p>{v['body']}</p></body></html>",
            subtype="html",
        )
    elif shape == "apple":
        stamp = when.strftime("%-d %B %Y at %H:%M:%S %Z") if when else v["date"]
        report.set_content(
            f"Begin forwarded message:\n\nFrom: {v['name']} <{v['from']}>\n"
            f"Subject: {v['subject']}\nDate: {stamp}\nTo: {v['to']}\n\n{v['body']}"
        )
    elif shape == "thunderbird":
        report.set_content(
            "\n\n-------- Forwarded Message --------\n"
            f"Subject: \t{v['subject']}\nDate: \t{v['date']}\n"
            f"From: \t{v['name']} <{v['from']}>\nTo: \t{v['to']}\n\n{v['body']}"
        )
    elif shape == "yahoo":
        report.set_content(
            f"\n\n----- Forwarded Message -----\nFrom: {v['name']} <{v['from']}>\n"
            f"To: Me <{v['to']}>\nSent: {v['date']}\nSubject: {v['subject']}\n\n{v['body']}"
        )
    elif shape in ("arf", "arf-fields-only"):
        return _arf(msg, original, reporter, abuse, with_copy=shape == "arf")
    elif shape == "headers-only":
        head = original.split(b"\r\n\r\n", 1)[0] + b"\r\n"
        report.set_content("The headers of the message:\n")
        report.add_attachment(head, maintype="text", subtype="rfc822-headers")
    elif shape == "redirect":
        # The client "redirects" (bounces) the message: the original with Resent-* added.
        resent = (
            f"Resent-From: {reporter}\r\nResent-To: {abuse}\r\n"
            f"Resent-Date: {email.utils.formatdate(usegmt=True)}\r\n"
        ).encode()
        return resent + original
    elif shape == "body-only":
        report.set_content(f"I keep getting this:\n\n{v['body']}")
    else:
        raise ValueError(shape)
    return report.as_bytes(policy=email.policy.SMTP)


def _arf(
    msg: EmailMessage, original: bytes, reporter: str, abuse: str, *, with_copy: bool
) -> bytes:
    return_path = str(msg.get("Return-Path") or "").strip()
    fields = (
        "Feedback-Type: abuse\r\nUser-Agent: Client/1.0\r\nVersion: 1\r\n"
        f"Original-Mail-From: {return_path}\r\nOriginal-Rcpt-To: <{reporter}>\r\n"
        f"Arrival-Date: {msg['Date']}\r\n"
    )
    parts = [
        "--B\r\nContent-Type: text/plain\r\n\r\nAn abuse report.\r\n",
        f"--B\r\nContent-Type: message/feedback-report\r\n\r\n{fields}\r\n",
    ]
    if with_copy:
        parts.append(
            "--B\r\nContent-Type: message/rfc822\r\n\r\n"
            + original.decode("utf-8", "replace")
            + "\r\n"
        )
    return (
        f"From: {reporter}\r\nTo: {abuse}\r\nSubject: abuse report\r\n"
        f"Date: {email.utils.formatdate(usegmt=True)}\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=feedback-report; "
        'boundary="B"\r\n\r\n' + "".join(parts) + "--B--\r\n"
    ).encode()


__all__ = ["SHAPES", "as_delivered", "report_of"]
