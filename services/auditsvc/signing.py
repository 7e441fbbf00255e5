"""The checkpoint signing key: loaded from a PEM file, or made once for development."""

from __future__ import annotations

import os
from pathlib import Path

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.auditsvc import chain
from services.common.server.config import ConfigError

log = structlog.get_logger("auditsvc.signing")


def public_key_path(key_file: Path) -> Path:
    """Where the public half is written for auditors: ``<key file>.pub``."""
    return key_file.with_name(key_file.name + ".pub")


def load_or_create(key_file: Path) -> Ed25519PrivateKey:
    """The Ed25519 key in ``key_file`` (PKCS#8 PEM); generated there if the file is absent.

    Generation is for development: in production mount the key and keep a copy offline. The
    public key is (re)written beside it so it can be handed to auditors.
    """
    if key_file.exists():
        try:
            key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        except (ValueError, TypeError):
            raise ConfigError(
                f"AUDITSVC_SIGNING_KEY_FILE={key_file} is not an unencrypted PEM private key"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"AUDITSVC_SIGNING_KEY_FILE={key_file} is not an Ed25519 key")
        created = False
    else:
        key = Ed25519PrivateKey.generate()
        key_file.parent.mkdir(parents=True, exist_ok=True)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        created = True
    public_key_path(key_file).write_text(chain.public_key_pem(key.public_key()), encoding="ascii")
    log.info(
        "signing_key_generated" if created else "signing_key_loaded",
        key_id=chain.key_id(key.public_key()),
        public_key_file=str(public_key_path(key_file)),
    )
    return key
