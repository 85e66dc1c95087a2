"""Where the address key-encryption keys and the ledger signing key live.

``key_store = "files"`` (the default) keeps them as 0600 files in the keys directory, read by
``vault`` and ``ledger.signing``. ``key_store = "pkcs11"`` keeps them in a PKCS#11 token (an
HSM; SoftHSM2 in the tests) through python-pkcs11: the KEKs are non-extractable AES-256
keys that wrap and unwrap data keys inside the token (AES-GCM), the ledger key an Ed25519
key pair that signs inside it (CKM_EDDSA). No key material of either leaves the token.

A backend is anything with the ``KeyStore`` methods; a cloud KMS (AES-GCM ``Encrypt`` /
``Decrypt`` with associated data, an Ed25519 or ECDSA ``Sign``) is one more class.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from mailveil.config import Settings
from mailveil.keyfiles import KeyFileError

_KCV_NONCE = b"\x00" * 12
_KCV_AAD = b"mailveil/key-fingerprint/v1"


class Aead(Protocol):
    """What the vault needs of a KEK: AES-GCM with associated data (cryptography's AESGCM
    has exactly this shape)."""

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes: ...

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes: ...


class KeyStore(Protocol):
    name: str

    def kek_ids(self) -> list[str]: ...

    def kek(self, kek_id: str) -> Aead: ...

    def new_kek(self, kek_id: str) -> None: ...

    def delete_kek(self, kek_id: str) -> None: ...

    def ledger_key(self, create: bool = False) -> Ed25519PrivateKey: ...

    def fingerprints(self) -> dict[tuple[str, str], str]: ...


# One loaded module per path for the life of the process: C_Initialize runs once.
_LIBS: dict[str, Any] = {}
_LIBS_LOCK = threading.Lock()


def _lib(path: str) -> Any:
    import pkcs11  # only when the PKCS#11 store is configured

    with _LIBS_LOCK:
        if path not in _LIBS:
            _LIBS[path] = pkcs11.lib(path)
        return _LIBS[path]


class _TokenAead:
    """A KEK inside the token; encrypt/decrypt run there."""

    def __init__(self, store: Pkcs11Store, key: Any) -> None:
        self._store, self._key = store, key

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
        return self._store._gcm(self._key, "encrypt", nonce, data, associated_data)

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
        return self._store._gcm(self._key, "decrypt", nonce, data, associated_data)


class Pkcs11Ed25519(Ed25519PrivateKey):
    """An Ed25519 private key that stays in the token: ``sign`` is C_Sign (CKM_EDDSA)."""

    def __init__(self, store: Pkcs11Store, private: Any, public_raw: bytes) -> None:
        self._store, self._private = store, private
        self._public = Ed25519PublicKey.from_public_bytes(public_raw)

    def public_key(self) -> Ed25519PublicKey:
        return self._public

    def sign(self, data: bytes | bytearray | memoryview) -> bytes:
        from pkcs11 import Mechanism

        with self._store._lock:
            signature: bytes = self._private.sign(bytes(data), mechanism=Mechanism.EDDSA)
        return signature

    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> bytes:
        raise KeyFileError("the ledger key is in the PKCS#11 token and cannot be exported")

    def private_bytes_raw(self) -> bytes:
        raise KeyFileError("the ledger key is in the PKCS#11 token and cannot be exported")

    def __copy__(self) -> Pkcs11Ed25519:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Pkcs11Ed25519:
        return self


class Pkcs11Store:
    """Keys in one PKCS#11 token, labelled ``<prefix>-kek-<id>`` and ``<prefix>-ledger``."""

    name = "pkcs11"

    def __init__(self, module: str, token_label: str, pin: str, prefix: str) -> None:
        import pkcs11
        from pkcs11.exceptions import PKCS11Error

        if not module or not token_label:
            raise KeyFileError("key_store = pkcs11 needs pkcs11_module and pkcs11_token_label")
        from pkcs11.exceptions import UserAlreadyLoggedIn

        try:
            token = _lib(module).get_token(token_label=token_label)
            try:
                self._session = token.open(user_pin=pin or None, rw=True)
            except UserAlreadyLoggedIn:
                # Login is per process and token: another store here logged in already.
                self._session = token.open(rw=True)
        except (PKCS11Error, OSError, RuntimeError) as exc:
            raise KeyFileError(
                f"PKCS#11 token {token_label!r} in {module} cannot be opened "
                f"({type(exc).__name__}); check pkcs11_module, pkcs11_token_label, pkcs11_pin"
            ) from None
        self._pkcs11 = pkcs11
        self._prefix = prefix
        self._lock = threading.Lock()  # one session: one operation at a time

    @classmethod
    def from_settings(cls, settings: Settings) -> Pkcs11Store:
        return cls(
            settings.pkcs11_module,
            settings.pkcs11_token_label,
            settings.pkcs11_pin,
            settings.pkcs11_key_prefix,
        )

    # -- KEKs --------------------------------------------------------------------------

    def _kek_label(self, kek_id: str) -> str:
        return f"{self._prefix}-kek-{kek_id}"

    def _gcm(self, key: Any, op: str, nonce: bytes, data: bytes, aad: bytes | None) -> bytes:
        from pkcs11 import GCMParams, Mechanism
        from pkcs11.exceptions import PKCS11Error

        from mailveil.vault import VaultError

        params = GCMParams(nonce, aad or None, 128)
        try:
            with self._lock:
                out: bytes = getattr(key, op)(
                    data, mechanism=Mechanism.AES_GCM, mechanism_param=params
                )
        except PKCS11Error as exc:
            if op == "decrypt":
                # The token's way of saying the tag does not verify.
                from cryptography.exceptions import InvalidTag

                raise InvalidTag from None
            raise VaultError(f"the PKCS#11 token refused to {op} ({type(exc).__name__})") from None
        return out

    def kek_ids(self) -> list[str]:
        from pkcs11 import Attribute, ObjectClass

        head = f"{self._prefix}-kek-"
        with self._lock:
            labels = [
                str(o.label)
                for o in self._session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY})
            ]
        return sorted(label[len(head) :] for label in labels if label.startswith(head))

    def kek(self, kek_id: str) -> Aead:
        from pkcs11 import KeyType, ObjectClass

        with self._lock:
            key = self._session.get_key(
                object_class=ObjectClass.SECRET_KEY,
                key_type=KeyType.AES,
                label=self._kek_label(kek_id),
            )
        return _TokenAead(self, key)

    def new_kek(self, kek_id: str) -> None:
        from pkcs11 import Attribute, KeyType

        with self._lock:
            self._session.generate_key(
                KeyType.AES,
                256,
                label=self._kek_label(kek_id),
                store=True,
                template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
            )

    def delete_kek(self, kek_id: str) -> None:
        from pkcs11 import KeyType, ObjectClass

        with self._lock:
            key = self._session.get_key(
                object_class=ObjectClass.SECRET_KEY,
                key_type=KeyType.AES,
                label=self._kek_label(kek_id),
            )
            key.destroy()

    # -- ledger key --------------------------------------------------------------------

    def ledger_key(self, create: bool = False) -> Ed25519PrivateKey:
        from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
        from pkcs11.exceptions import NoSuchKey
        from pkcs11.util.ec import encode_named_curve_parameters

        label = f"{self._prefix}-ledger"
        with self._lock:
            try:
                private = self._session.get_key(
                    object_class=ObjectClass.PRIVATE_KEY, key_type=KeyType.EC_EDWARDS, label=label
                )
                public = self._session.get_key(
                    object_class=ObjectClass.PUBLIC_KEY, key_type=KeyType.EC_EDWARDS, label=label
                )
            except NoSuchKey:
                if not create:
                    raise KeyFileError(
                        f"no ledger key {label!r} in the PKCS#11 token; `mailveil init` creates "
                        "it for a new database only"
                    ) from None
                params = self._session.create_domain_parameters(
                    KeyType.EC_EDWARDS,
                    {Attribute.EC_PARAMS: encode_named_curve_parameters("1.3.101.112")},
                    local=True,
                )
                public, private = params.generate_keypair(
                    store=True,
                    label=label,
                    mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
                    private_template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
                )
            point = bytes(public[Attribute.EC_POINT])
        # CKA_EC_POINT is a DER OCTET STRING around the 32-byte key (04 20 ...).
        raw = point[2:] if len(point) == 34 and point[:2] == b"\x04\x20" else point
        return Pkcs11Ed25519(self, private, raw)

    def fingerprints(self) -> dict[tuple[str, str], str]:
        """Comparable fingerprints of the token's keys: a key check value for each KEK (an
        AES-GCM tag over nothing, under a fixed nonce used for nothing else), a hash of the
        ledger's public key."""
        found: dict[tuple[str, str], str] = {}
        for kek_id in self.kek_ids():
            tag = self.kek(kek_id).encrypt(_KCV_NONCE, b"", _KCV_AAD)
            found[("address-kek", f"pkcs11:{self._kek_label(kek_id)}")] = tag.hex()[:32]
        try:
            public = self.ledger_key().public_key().public_bytes_raw()
        except KeyFileError:
            return found
        found[("ledger-signing", f"pkcs11:{self._prefix}-ledger")] = hashlib.sha256(
            public
        ).hexdigest()[:32]
        return found


def key_store(settings: Settings) -> Pkcs11Store | None:
    """The configured key store, or None for files in the keys directory."""
    if settings.key_store == "files":
        return None
    return Pkcs11Store.from_settings(settings)


__all__ = ["Aead", "KeyStore", "Pkcs11Ed25519", "Pkcs11Store", "key_store"]
