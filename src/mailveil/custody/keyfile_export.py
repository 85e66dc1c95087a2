"""The keys directory exported as one file wrapped under a passphrase (scrypt, AES-256-GCM).

Format: the line ``mailveil-keys/v1``, one line of JSON naming the KDF and its parameters,
then the ciphertext. The JSON header is the associated data, so its parameters cannot be
changed without the tag failing. The plaintext is JSON: every file of the keys directory
(base64) and when the export was made.
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from mailveil.keyfiles import KeyFileError, read_secret, write_secret

MAGIC = b"mailveil-keys/v1\n"
# scrypt at 2^15 x 8: ~32 MiB and well under a second; guessing a passphrase costs as much.
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
MIN_PASSPHRASE = 12


class KeyExportError(ValueError):
    """A key export cannot be made or opened (bad passphrase, damaged or foreign file)."""


def _kdf(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


def read_keys_dir(keys_dir: Path) -> dict[str, bytes]:
    """Every regular file of the keys directory (secrets checked for their mode)."""
    if not keys_dir.is_dir():
        raise KeyFileError(f"no keys directory at {keys_dir}")
    files: dict[str, bytes] = {}
    for path in sorted(keys_dir.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            public = path.suffix in (".pub", ".json")  # verifier keys, the DKIM rollover state
            files[path.name] = path.read_bytes() if public else read_secret(path)
    if not files:
        raise KeyFileError(f"the keys directory {keys_dir} is empty")
    return files


def wrap_keys(files: dict[str, bytes], passphrase: str, *, n: int = SCRYPT_N) -> bytes:
    if len(passphrase) < MIN_PASSPHRASE:
        raise KeyExportError(f"the passphrase must have at least {MIN_PASSPHRASE} characters")
    salt, nonce = os.urandom(16), os.urandom(12)
    header = json.dumps(
        {
            "kdf": "scrypt",
            "n": n,
            "r": SCRYPT_R,
            "p": SCRYPT_P,
            "salt": base64.b64encode(salt).decode(),
            "aead": "AES-256-GCM",
            "nonce": base64.b64encode(nonce).decode(),
        },
        sort_keys=True,
    ).encode()
    body = json.dumps(
        {
            "created": int(time.time()),
            "files": {name: base64.b64encode(data).decode() for name, data in files.items()},
        }
    ).encode()
    key = _kdf(passphrase, salt, n, SCRYPT_R, SCRYPT_P)
    return MAGIC + header + b"\n" + AESGCM(key).encrypt(nonce, body, MAGIC + header)


def unwrap_keys(blob: bytes, passphrase: str) -> dict[str, bytes]:
    if not blob.startswith(MAGIC):
        raise KeyExportError("not a mailveil key export (mailveil-keys/v1)")
    header, sep, ct = blob[len(MAGIC) :].partition(b"\n")
    try:
        params = json.loads(header)
        salt = base64.b64decode(params["salt"])
        nonce = base64.b64decode(params["nonce"])
        n, r, p = int(params["n"]), int(params["r"]), int(params["p"])
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyExportError("the key export's header is damaged") from exc
    if not sep or params.get("kdf") != "scrypt" or not 2**14 <= n <= 2**20 or r > 32 or p > 16:
        raise KeyExportError("the key export's header is damaged")
    try:
        body = AESGCM(_kdf(passphrase, salt, n, r, p)).decrypt(nonce, ct, MAGIC + header)
    except InvalidTag:
        raise KeyExportError("wrong passphrase, or the key export was altered") from None
    files = json.loads(body)["files"]
    return {name: base64.b64decode(data) for name, data in files.items()}


def install_keys(files: dict[str, bytes], keys_dir: Path) -> list[str]:
    """Write the exported files into ``keys_dir`` (0700, files 0600). A file already there
    must be identical: a restore never overwrites a different key. Returns what was written."""
    for name in files:
        if "/" in name or name.startswith(".") or name in ("", ".."):
            raise KeyExportError(f"the key export names an unsafe file {name!r}")
    clashes = [
        name
        for name, data in files.items()
        if (keys_dir / name).exists() and (keys_dir / name).read_bytes() != data
    ]
    if clashes:
        raise KeyExportError(
            f"{keys_dir} already holds different keys ({', '.join(sorted(clashes))}); "
            "restore into an empty keys directory"
        )
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(keys_dir, 0o700)
    written = []
    for name, data in sorted(files.items()):
        if not (keys_dir / name).exists():
            write_secret(keys_dir / name, data)
            written.append(name)
    return written


__all__ = [
    "MIN_PASSPHRASE",
    "KeyExportError",
    "install_keys",
    "read_keys_dir",
    "unwrap_keys",
    "wrap_keys",
]
