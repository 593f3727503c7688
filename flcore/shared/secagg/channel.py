"""Two devices' shared secrets through the relay: X25519 agreement, HKDF-SHA256, AES-GCM.

Each device advertises two public keys per attempt: one to encrypt the shares it
sends its neighbours (``c``), one to agree the pairwise mask seeds (``s``). What
one device encrypts for another is bound to the job, round, attempt and both
names (associated data), so the relay cannot replay it elsewhere undetected.
"""

from __future__ import annotations

import base64
import os

# the cryptography package is in the function's package only where privacy settings are wanted
# (make package FL_PACKAGE_PRIVACY=1); a job that needs it is refused at creation without it
try:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    AVAILABLE = True
except ImportError:  # pragma: no cover - exercised by the package built without it
    AVAILABLE = False


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def new_key() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def public(key: X25519PrivateKey) -> str:
    return b64(key.public_key().public_bytes_raw())


def public_of(private: bytes) -> str:
    """The public key of a private key's 32 bytes (whether a rebuilt key is the one advertised)."""
    try:
        return public(X25519PrivateKey.from_private_bytes(private))
    except ValueError:
        return ""


def private_bytes(key: X25519PrivateKey) -> bytes:
    return key.private_bytes_raw()


def agree(own: X25519PrivateKey | bytes, other_public: str, purpose: str) -> bytes:
    """A 32-byte secret only ``own``'s holder and ``other_public``'s holder can compute."""
    key = own if isinstance(own, X25519PrivateKey) else X25519PrivateKey.from_private_bytes(own)
    shared = key.exchange(X25519PublicKey.from_public_bytes(unb64(other_public)))
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(shared)


def seal(key: bytes, plaintext: bytes, context: str) -> str:
    nonce = os.urandom(12)
    return b64(nonce + AESGCM(key).encrypt(nonce, plaintext, context.encode()))


def open_sealed(key: bytes, sealed: str, context: str) -> bytes:
    """The plaintext; raises ``cryptography.exceptions.InvalidTag`` if anything was altered."""
    raw = unb64(sealed)
    return AESGCM(key).decrypt(raw[:12], raw[12:], context.encode())


def valid_public(text: object) -> bool:
    """Whether ``text`` is a base64 X25519 public key (32 bytes)."""
    if not isinstance(text, str) or len(text) != 44:
        return False
    try:
        X25519PublicKey.from_public_bytes(unb64(text))
    except ValueError:
        return False
    return True
