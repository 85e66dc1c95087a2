"""Key custody: the key set bound to its database, backups and restores, rotations.

``binding`` records a fingerprint of every key at first ``mailveil init`` and refuses keys
that do not match; ``backup`` takes consistent snapshots with the keys exported apart and
wrapped under a passphrase; ``rotation`` rotates the keys that ``vault`` does not.
"""
