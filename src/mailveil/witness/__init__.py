"""Witnessing the ledger (C2SP tlog-witness, tlog-cosignature).

Two halves, which never share a process or a database:

- **the witness** (``home``, ``state``, ``service``, ``server``): ``mailveil witness``, run by
  someone other than the ledger's operator, on another host. It keeps its own Ed25519 key and,
  per log, the latest checkpoint it cosigned; it cosigns a new checkpoint only when a Merkle
  consistency proof shows the log grew append-only from that one.
- **the log side** (``models``, ``policy``, ``client``, ``publish``, ``alerts``, ``queries``):
  inside mailveil, it submits the ledger's checkpoints with consistency proofs to the
  configured witnesses, stores the cosignatures they return (evidence bundles carry them) and
  raises an alert when a witness refuses, which is what a rewritten or forked ledger looks like
  from outside.
"""
