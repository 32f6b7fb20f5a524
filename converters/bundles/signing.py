"""Ed25519 keys and detached signatures of bundles, through the ``cryptography`` package.

A bundle's signature ``<bundle>.tar.gz.sig`` is the raw 64-byte Ed25519 signature of the
archive's ``sha256sum`` line (exactly the content of ``<bundle>.tar.gz.sha256``), so a device
with OpenSSL 3 can check it without this package::

    openssl pkeyutl -verify -pubin -inkey bundle-signing.pub.pem -rawin \\
        -in BUNDLE.tar.gz.sha256 -sigfile BUNDLE.tar.gz.sig && sha256sum -c BUNDLE.tar.gz.sha256

Keys are PEM files: PKCS#8 private keys and SubjectPublicKeyInfo public keys, as ``openssl
genpkey -algorithm ed25519`` and ``openssl pkey -pubout`` write them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from converters.bundles.verify import SignatureCheck, VerificationError, read_key_file
from converters.errors import ConfigError, ToolMissingError
from converters.fsutil import write_bytes_atomic

PRIVATE_KEY = "bundle-signing.pem"
PUBLIC_KEY = "bundle-signing.pub.pem"


def _ed25519() -> Any:
    """cryptography's Ed25519 module, or a message saying how to install it."""
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise ToolMissingError("signing bundles needs the cryptography package: pip install "
                               "-c constraints.txt -e '.[signing]'") from None
    return ed25519


def _load_pem(path: Path, what: str, private: bool) -> Any:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    ed25519 = _ed25519()
    try:
        data = read_key_file(path, what)
    except VerificationError as error:
        raise ConfigError(str(error)) from None
    expected = ed25519.Ed25519PrivateKey if private else ed25519.Ed25519PublicKey
    try:
        key = (serialization.load_pem_private_key(data, password=None) if private
               else serialization.load_pem_public_key(data))
    except TypeError:
        raise ConfigError(f"the {what} {path} is encrypted: give an unencrypted PEM key (keep it "
                          "readable by you only)") from None
    except (ValueError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, expected):
        kind = f"a {type(key).__name__}" if key is not None else "not a PEM key"
        raise ConfigError(f"the {what} {path} is {kind}, expected an Ed25519 "
                          f"{'private' if private else 'public'} key in PEM form: make a key pair "
                          "with invoke bundle-keygen --out DIR")
    return key


def load_signing_key(path: Path) -> Any:
    """The Ed25519 private key at ``path`` (checked before a bundle is built)."""
    return _load_pem(path, "signing key", private=True)


def sign(key: Any, message: bytes) -> bytes:
    signature: bytes = key.sign(message)
    return signature


def public_key_check(path: Path) -> SignatureCheck:
    """A signature check with cryptography's Ed25519 and the PEM public key at ``path``."""
    from cryptography.exceptions import InvalidSignature

    key = _load_pem(path, "public key", private=False)

    def check(message: bytes, signature: bytes) -> bool:
        try:
            key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    return check


def generate_keys(folder: Path) -> tuple[Path, Path]:
    """Write a new key pair into ``folder`` (never over existing keys); return both paths."""
    from cryptography.hazmat.primitives import serialization

    private_path, public_path = folder / PRIVATE_KEY, folder / PUBLIC_KEY
    existing = [str(p) for p in (private_path, public_path) if p.exists()]
    if existing:
        raise ConfigError(f"{' and '.join(existing)} already exist: keep them, or pass another "
                          "--out folder")
    key = _ed25519().Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    folder.mkdir(parents=True, exist_ok=True)
    # Created readable by the owner only from the start (O_EXCL: never over another file).
    with os.fdopen(os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
        out.write(private_pem)
    write_bytes_atomic(public_path, public_pem)
    return private_path, public_path
