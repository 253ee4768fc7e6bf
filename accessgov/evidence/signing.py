"""The operator's Ed25519 signing key: loaded from EVIDENCE_SIGNING_KEY (PEM text) or
EVIDENCE_SIGNING_KEY_FILE (a PEM file); with DEBUG on and neither set, a development key is made once
under VAR_DIR (never for production). The public key and its fingerprint are shown in the portal."""

import hashlib
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings


class SigningKeyMissing(Exception):
    """No signing key is configured (or it is not an Ed25519 private key)."""


def _development_key_file() -> Path:
    return Path(settings.VAR_DIR) / "evidence_signing_key.pem"


def _load_pem() -> bytes:
    if settings.EVIDENCE_SIGNING_KEY:
        return settings.EVIDENCE_SIGNING_KEY.replace("\\n", "\n").encode()
    if settings.EVIDENCE_SIGNING_KEY_FILE:
        try:
            return Path(settings.EVIDENCE_SIGNING_KEY_FILE).read_bytes()
        except OSError as exc:
            raise SigningKeyMissing(f"EVIDENCE_SIGNING_KEY_FILE cannot be read: {exc.strerror}.") from exc
    if settings.DEBUG:
        key_file = _development_key_file()
        if not key_file.exists():
            key_file.write_bytes(private_key_pem(Ed25519PrivateKey.generate()))
            key_file.chmod(0o600)
        return key_file.read_bytes()
    raise SigningKeyMissing(
        "No evidence signing key is configured: set EVIDENCE_SIGNING_KEY_FILE to an Ed25519 private key "
        "(docs/EVIDENCE.md, 'The signing key')."
    )


def private_key() -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(_load_pem(), password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyMissing("The evidence signing key is not a readable unencrypted PEM private key.") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyMissing("The evidence signing key must be an Ed25519 key.")
    return key


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def fingerprint(key: Ed25519PublicKey) -> str:
    """SHA-256 of the raw 32-byte public key, hex: what the portal shows and the verifier prints."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "SHA256:" + hashlib.sha256(raw).hexdigest()


def public_key_info() -> dict[str, str] | None:
    """{"pem", "fingerprint"} of the configured key, or None when none is configured."""
    try:
        public = private_key().public_key()
    except SigningKeyMissing:
        return None
    return {"pem": public_key_pem(public), "fingerprint": fingerprint(public)}


def sign(data: bytes) -> tuple[bytes, str]:
    """(signature, fingerprint of the key that made it)."""
    key = private_key()
    return key.sign(data), fingerprint(key.public_key())
