"""The SMTP relay: reply codes, smuggling defence, message rewriting and redaction.

Submodules are imported where used; nothing here runs at import time.
"""
