"""The checkpoint signing key and the verification keys trusted from configuration.

Trust is anchored outside the database: checkpoints verify only against the keys listed in
``AUDITSVC_TRUSTED_KEYS_FILE`` (each with its validity period, so the signing key can rotate),
never against keys read from PostgreSQL. The signing key file must exist; a key is generated
only when ``AUDITSVC_SIGNING_KEY_GENERATE=true`` (the development stack and the tests).
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.auditsvc import chain
from services.common.server.config import ConfigError

log = structlog.get_logger("auditsvc.signing")


def public_key_path(key_file: Path) -> Path:
    """Where the public half is written for auditors: ``<key file>.pub``."""
    return key_file.with_name(key_file.name + ".pub")


def write_new_key(key_file: Path) -> Ed25519PrivateKey:
    """A fresh Ed25519 key in ``key_file`` (PKCS#8 PEM, mode 0600); refuses to overwrite."""
    key = Ed25519PrivateKey.generate()
    key_file.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    public_key_path(key_file).write_text(chain.public_key_pem(key.public_key()), encoding="ascii")
    return key


def load_signing_key(key_file: Path, *, generate: bool) -> Ed25519PrivateKey:
    """The Ed25519 key in ``key_file``; a missing file is a configuration error unless
    ``generate`` (development), which makes one there."""
    if not key_file.exists():
        if not generate:
            raise ConfigError(
                f"AUDITSVC_SIGNING_KEY_FILE={key_file} does not exist: mount the checkpoint "
                "signing key there (make one with `phiseal-audit keygen`). A key is generated "
                "only in development, with AUDITSVC_SIGNING_KEY_GENERATE=true"
            )
        key = write_new_key(key_file)
        log.warning(
            "signing_key_generated",
            key_id=chain.key_id(key.public_key()),
            public_key_file=str(public_key_path(key_file)),
        )
        return key
    try:
        loaded = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except (ValueError, TypeError):
        raise ConfigError(
            f"AUDITSVC_SIGNING_KEY_FILE={key_file} is not an unencrypted PEM private key"
        ) from None
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ConfigError(f"AUDITSVC_SIGNING_KEY_FILE={key_file} is not an Ed25519 key")
    log.info("signing_key_loaded", key_id=chain.key_id(loaded.public_key()))
    return loaded


def _time(value: Any, where: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"{where} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{where} needs a time zone (e.g. 2026-01-01T00:00:00Z)")
    return parsed


def parse_trusted_keys(text: str) -> dict[str, chain.TrustedKey]:
    """``{"keys": [{"public_key": PEM, "key_id"?, "valid_from"?, "valid_until"?}]}``."""
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError('expected an object {"keys": [...]}')
    keys: dict[str, chain.TrustedKey] = {}
    for i, item in enumerate(data["keys"]):
        where = f"keys[{i}]"
        if not isinstance(item, dict) or "public_key" not in item:
            raise ValueError(f"{where} needs public_key (PEM)")
        public = chain.load_public_key_pem(str(item["public_key"]))
        kid = chain.key_id(public)
        if item.get("key_id", kid) != kid:
            raise ValueError(f"{where}.key_id does not match its public key (expected {kid})")
        start = _time(item.get("valid_from"), f"{where}.valid_from")
        end = _time(item.get("valid_until"), f"{where}.valid_until")
        if start and end and start >= end:
            raise ValueError(f"{where}: valid_from must be before valid_until")
        keys[kid] = chain.TrustedKey(kid, public, start, end)
    return keys


def trusted_key_entry(key: chain.TrustedKey) -> dict[str, Any]:
    return {
        "key_id": key.key_id,
        "algorithm": "Ed25519",
        "public_key": chain.public_key_pem(key.public_key),
        "valid_from": chain.format_time(key.valid_from) if key.valid_from else None,
        "valid_until": chain.format_time(key.valid_until) if key.valid_until else None,
    }


def write_trusted_keys(path: Path, keys: dict[str, chain.TrustedKey]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = [trusted_key_entry(k) for k in keys.values()]
    path.write_text(json.dumps({"keys": entries}, indent=2) + "\n", encoding="ascii")


def read_trusted_keys(path: Path) -> dict[str, chain.TrustedKey]:
    """The keys in ``path``; ValueError or OSError naming what is wrong."""
    try:
        return parse_trusted_keys(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def load_trust(
    path: Path, signing_key: Ed25519PrivateKey, now: datetime, *, generate: bool
) -> dict[str, chain.TrustedKey]:
    """The configured verification keys, which must trust ``signing_key`` now.

    With ``generate`` (development only) a missing file or entry is written for the key.
    """
    kid = chain.key_id(signing_key.public_key())
    try:
        keys = read_trusted_keys(path) if path.exists() or not generate else {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"AUDITSVC_TRUSTED_KEYS_FILE: {exc}") from None
    if kid not in keys and generate:
        keys[kid] = chain.TrustedKey(kid, signing_key.public_key())
        write_trusted_keys(path, keys)
        log.warning("trusted_key_added", key_id=kid, trusted_keys_file=str(path))
    if kid not in keys:
        raise ConfigError(
            f"the signing key (key id {kid}) is not in AUDITSVC_TRUSTED_KEYS_FILE={path}: "
            "add its public key there (`phiseal-audit keygen` prints the entry), or mount the "
            "signing key that file trusts"
        )
    if not keys[kid].covers(now):
        raise ConfigError(
            f"the signing key (key id {kid}) is outside its validity period in "
            f"AUDITSVC_TRUSTED_KEYS_FILE={path}: rotate to the key that is valid now"
        )
    return keys
