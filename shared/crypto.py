"""Encryption at rest for credentials (MSAL token caches, ICS import URLs, auth flows).

AES-256-GCM with a key id in front, so keys rotate: the first configured key encrypts,
every configured key decrypts. Format: ``v1.<kid>.<base64url(nonce|ciphertext|tag)>``.
The associated data binds a ciphertext to its row (e.g. the account id), so a blob
copied to another row does not decrypt.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.errors import ConfigError, SyncError


class DecryptionError(SyncError):
    code = "decryption"


class Cipher:
    def __init__(self, keys: tuple[tuple[str, bytes], ...]) -> None:
        if not keys:
            raise ConfigError(["TOKEN_ENCRYPTION_KEYS: at least one key is needed"])
        self._active_kid = keys[0][0]
        self._keys = {kid: AESGCM(key) for kid, key in keys}

    @property
    def active_key_id(self) -> str:
        return self._active_kid

    def encrypt(self, plaintext: bytes, *, aad: str) -> str:
        nonce = os.urandom(12)
        sealed = self._keys[self._active_kid].encrypt(nonce, plaintext, aad.encode())
        return f"v1.{self._active_kid}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def decrypt(self, token: str, *, aad: str) -> bytes:
        version, _, rest = token.partition(".")
        kid, _, payload = rest.partition(".")
        if version != "v1" or not kid or not payload:
            raise DecryptionError("ciphertext has an unknown format")
        key = self._keys.get(kid)
        if key is None:
            raise DecryptionError(f"ciphertext uses key '{kid}', which is no longer configured")
        try:
            raw = base64.urlsafe_b64decode(payload.encode())
            return key.decrypt(raw[:12], raw[12:], aad.encode())
        except (InvalidTag, ValueError) as exc:
            raise DecryptionError("ciphertext does not decrypt (tampered, or bound to another row)") from exc

    def key_id_of(self, token: str) -> str:
        return token.split(".", 2)[1] if token.count(".") >= 2 else ""

    def needs_reencryption(self, token: str) -> bool:
        """True when ``token`` was sealed with a key other than the active one."""
        return self.key_id_of(token) != self._active_kid

    def encrypt_str(self, text: str, *, aad: str) -> str:
        return self.encrypt(text.encode(), aad=aad)

    def decrypt_str(self, token: str, *, aad: str) -> str:
        return self.decrypt(token, aad=aad).decode()
