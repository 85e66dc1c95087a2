"""A customer's abuse report: the spam that reached one of their aliases, forwarded as an
attachment (importable from any test folder: tests/ is on sys.path)."""

from __future__ import annotations

from email.message import EmailMessage


def forwarded_spam(alias: str, reporter: str = "someone@example.com") -> bytes:
    spam = EmailMessage()
    spam["From"] = "deals@spam.example"
    spam["To"] = alias
    spam["Subject"] = "prize"
    spam.set_content("click")
    report = EmailMessage()
    report["From"] = reporter
    report["Subject"] = "Fwd: prize"
    report.set_content("spam")
    report.add_attachment(spam)
    return report.as_bytes()
