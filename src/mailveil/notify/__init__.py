"""Guarded notifications: facts, templates, lint, evidence-gated staged sends, corrections."""
