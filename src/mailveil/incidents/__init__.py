"""Incident response: blast radius from the ledger's tables, containment, breach notices
and regulator reports."""
