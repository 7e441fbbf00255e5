"""The decryption kit: events, JSON-lines files, keys by kid, passphrases, the CEK cache, CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from phiseal_decrypt import BindingMismatch, Decryptor, Keyring, WrongKey, concrete_key
from phiseal_decrypt.cli import run
from services.common.fieldpath import FieldPath
from services.common.vocabulary import EncryptionFormat
from services.encryptsvc.encryption import Encryptor, Limits, Policy
from tests.encryptsvc.keys import KeyPair, rsa_key, x25519_key
from tests.encryptsvc.test_encryption import FixedSource

FIELDS = ("properties.notes", 'traits["first name"]', "traits.email", "traits.tags[*]")


def _event(i: int) -> dict[str, Any]:
    return {
        "messageId": f"m{i}",
        "traits": {"email": f"u{i}@x.y", "first name": "Zoë", "tags": [i, True, None]},
        "properties": {"notes": {"long": "n" * 300}},
    }


async def _sealed(
    key: KeyPair, events: list[dict[str, Any]], fmt: EncryptionFormat = EncryptionFormat.JWE
) -> list[bytes]:
    fields = FIELDS if fmt == EncryptionFormat.JWE else ("traits.email",)
    policy = Policy("dest_1", 1, True, fmt, fields)
    result = await Encryptor(FixedSource(policy, key), Limits()).encrypt(
        "dest_1", [orjson.dumps(e) for e in events]
    )
    return [o.event or b"" for o in result.outcomes]


def _ring(*keys: KeyPair) -> Keyring:
    ring = Keyring()
    for key in keys:
        ring.add(key.private)
    return ring


def test_concrete_key_matches_the_service_path_syntax() -> None:
    """The kit spells bound paths exactly as services.common.fieldpath does."""
    for segments in [("traits", "email"), ("traits", "first name"), ("properties", 'a"b', "c.d")]:
        spelled = "".join(concrete_key(s, first=i == 0) for i, s in enumerate(segments))
        assert str(FieldPath(segments)) == spelled


async def test_event_round_trips_and_caches_the_data_key() -> None:
    """A batch of events decrypts exactly, with one private-key operation for the whole batch."""
    key = x25519_key()
    events = [_event(i) for i in range(10)]
    decryptor = Decryptor(_ring(key))
    opened = [decryptor.decrypt_event(orjson.loads(e)) for e in await _sealed(key, events)]
    assert events == opened
    assert decryptor.unwraps == 1


async def test_without_cache_every_field_unwraps() -> None:
    """cache_size=0 does one private-key operation per field (what the cache saves)."""
    key = rsa_key()
    decryptor = Decryptor(_ring(key), cache_size=0)
    decryptor.decrypt_event(orjson.loads((await _sealed(key, [_event(1)]))[0]))
    assert decryptor.unwraps == 6


async def test_ciphertext_moved_between_fields_or_events_fails() -> None:
    """Swapping values between two fields, or between two events, is a BindingMismatch."""
    key = rsa_key()
    a, b = (orjson.loads(e) for e in await _sealed(key, [_event(1), _event(2)]))
    decryptor = Decryptor(_ring(key))
    moved_field = {**a, "traits": {**a["traits"], "email": a["properties"]["notes"]}}
    with pytest.raises(BindingMismatch):
        decryptor.decrypt_event(moved_field)
    moved_event = {**a, "traits": {**a["traits"], "email": b["traits"]["email"]}}
    with pytest.raises(BindingMismatch):
        decryptor.decrypt_event(moved_event)


async def test_wrong_key_names_the_kid_needed() -> None:
    """Decrypting with another key says which kid is needed."""
    sealed = (await _sealed(rsa_key("dest_1.v7"), [_event(1)]))[0]
    with pytest.raises(WrongKey, match=r"dest_1\.v7"):
        Decryptor(_ring(rsa_key("other"))).decrypt_event(orjson.loads(sealed))


async def test_rotated_keys_are_chosen_by_kid() -> None:
    """With several keys, each value is opened by the key labelled with its kid."""
    old, new = rsa_key("dest_1.v1"), x25519_key("dest_1.v2")
    ring = Keyring()
    ring.add(new.private, "dest_1.v2")
    ring.add(old.private, "dest_1.v1")
    events = [_event(1)]
    decryptor = Decryptor(ring)
    for key in (old, new):
        assert events == [
            decryptor.decrypt_event(orjson.loads(e)) for e in await _sealed(key, events)
        ]


async def test_cli_decrypts_a_jsonl_file_with_a_passphrase_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """phiseal-decrypt file: passphrase-protected PKCS#8 key, JSON lines in, plaintext lines out."""
    key = rsa_key()
    assert isinstance(key.private, rsa.RSAPrivateKey)
    protected = key.private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"correct horse battery"),
    )
    (tmp_path / "k.pem").write_bytes(protected)
    events = [_event(i) for i in range(5)]
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(await _sealed(key, events)) + b"\n")
    monkeypatch.setenv("KEY_PASS", "correct horse battery")
    args = ["--key", str(tmp_path / "k.pem"), "--passphrase-env", "KEY_PASS", "file"]
    assert run([*args, str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl")]) == 0
    lines = (tmp_path / "out.jsonl").read_bytes().splitlines()
    assert events == [orjson.loads(line) for line in lines]
    assert "decrypting" in capsys.readouterr().err  # the progress bar


async def test_cli_reports_a_missing_passphrase(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A protected key without a passphrase (and no terminal) is a clear error, exit 1."""
    key = rsa_key()
    assert isinstance(key.private, rsa.RSAPrivateKey)
    pem = key.private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"correct horse battery"),
    )
    (tmp_path / "k.pem").write_bytes(pem)
    assert run(["--key", str(tmp_path / "k.pem"), "value", "x.y.z.a.b"]) == 1
    assert "--passphrase-env" in capsys.readouterr().err


async def test_cli_decrypts_segment_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--segment opens SEGMENT_RSA_OAEP values inside an event."""
    key = rsa_key()
    (tmp_path / "k.pem").write_bytes(key.private_pem)
    event = _event(3)
    (tmp_path / "e.json").write_bytes(
        (await _sealed(key, [event], EncryptionFormat.SEGMENT_RSA_OAEP))[0]
    )
    assert (
        run(["--key", str(tmp_path / "k.pem"), "--segment", "event", str(tmp_path / "e.json")]) == 0
    )
    assert event == orjson.loads(capsys.readouterr().out)


async def test_cli_file_gives_back_numbers_past_64_bits_exactly(tmp_path: Path) -> None:
    """phiseal-decrypt file: numbers sealed in named fields (and beside them) come out digit for
    digit, as sent; before, both became doubles (1.2345678901234568e+29)."""
    key = x25519_key()
    raw = (
        b'{"messageId":"m1","order_id":123456789012345678901234567890,'
        b'"traits":{"email":18446744073709551616,"tags":[-0,1E5,20.50,1e400]},'
        b'"properties":{"notes":{"n":-9223372036854775809}}}'
    )
    policy = Policy("dest_1", 1, True, EncryptionFormat.JWE, FIELDS)
    result = await Encryptor(FixedSource(policy, key), Limits()).encrypt("dest_1", [raw])
    assert result.outcomes[0].encrypted_fields == 6
    (tmp_path / "k.pem").write_bytes(key.private_pem)
    (tmp_path / "in.jsonl").write_bytes((result.outcomes[0].event or b"") + b"\n")
    args = ["--key", str(tmp_path / "k.pem"), "file", "--no-progress"]
    assert run([*args, str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl")]) == 0
    assert (tmp_path / "out.jsonl").read_bytes() == raw + b"\n"
