"""Searching stored bytes (dumps, data files, WAL, logs) for secrets that must not be there."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from pathlib import Path

import asyncpg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa, x25519


def pem_body_lines(pem: str) -> list[str]:
    """The base64 lines of a PEM, without its BEGIN/END armour."""
    return [line for line in pem.splitlines() if line and not line.startswith("-----")]


def needles(private_key_pem: str, passphrase: bytes | None = None) -> list[bytes]:
    """What would give the key away: its DER, the PEM body lines, the raw secret, hex forms."""
    key = serialization.load_pem_private_key(private_key_pem.encode(), passphrase)
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    plain_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    if isinstance(key, x25519.X25519PrivateKey):
        secret = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
    else:
        assert isinstance(key, rsa.RSAPrivateKey)
        p = key.private_numbers().p
        secret = p.to_bytes((p.bit_length() + 7) // 8, "big")
    found = [der, secret, der.hex().encode(), secret.hex().encode()]
    found += [base64.b64encode(secret)]
    lines = pem_body_lines(plain_pem) + pem_body_lines(private_key_pem)
    found += [line.encode() for line in lines if len(line) >= 40]
    return found


def search(blobs: Iterable[tuple[str, bytes]], wanted: list[bytes]) -> list[str]:
    """Names of the blobs that contain any of ``wanted``."""
    pattern = re.compile(b"|".join(re.escape(w) for w in wanted))
    return [name for name, blob in blobs if pattern.search(blob)]


def data_files(data_dir: Path) -> Iterable[tuple[str, bytes]]:
    """Every file of the cluster's data directory, pg_wal included (the tests run as root)."""
    for path in sorted(data_dir.rglob("*")):
        if path.is_file():
            try:
                yield str(path.relative_to(data_dir)), path.read_bytes()
            except (FileNotFoundError, PermissionError):  # removed while we walk: temp files
                continue


async def flush_to_disk(admin_url: str) -> None:
    """Checkpoints and switches WAL segment, so what the cluster holds is in files to search."""
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute("CHECKPOINT")
        await admin.execute("SELECT pg_switch_wal()")
    finally:
        await admin.close()
