"""The tamper-evident ledger: append, signed checkpoints, proofs, verification.

Import the submodules (``append``, ``signing``, ``proofs``, ``verify``, ``queries``); nothing
is imported here so that ``mailveil.ledger.events`` stays cheap for callers.
"""
