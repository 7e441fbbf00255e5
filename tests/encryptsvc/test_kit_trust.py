"""The kit trusts no header: a forged JWE (anyone with the public key can make one) in a
free-text field neither relabels nor hides a key; --only decrypts the policy's paths alone; a
file goes on past a bad value, with error lines apart from the progress bar."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from phiseal_decrypt import Decryptor, Keyring
from phiseal_decrypt.cli import run
from services.encryptsvc.envelope import JweSealer, RecipientKey
from tests.encryptsvc.keys import KeyPair, rsa_key
from tests.encryptsvc.test_kit import FIELDS, _event, _sealed


def _forged(key: KeyPair, mid: str, path: str, kid: str = "dest_1.v9") -> str:
    """What anyone holding the destination's public key can make, for any kid they like."""
    sealer = JweSealer(RecipientKey(kid, key.recipient.public_key), "dest_1")
    return sealer.seal(orjson.dumps("gotcha"), mid, path)


def _with_forgery(key: KeyPair, sealed: bytes) -> dict[str, Any]:
    event: dict[str, Any] = orjson.loads(sealed)
    event["properties"]["comment"] = _forged(key, event["messageId"], "properties.comment")
    return event


async def test_a_forged_kid_does_not_take_the_only_key_away() -> None:
    """A forged value opened first with the customer's only (unlabelled) key: every genuine
    value after it still decrypts (a kid orders candidates, it never removes one)."""
    key = rsa_key()
    events = [_event(i) for i in range(4)]
    sealed = await _sealed(key, events)
    ring = Keyring()
    ring.add(key.private)
    decryptor = Decryptor(ring)
    first = decryptor.decrypt_event(_with_forgery(key, sealed[0]))
    assert first["properties"]["comment"] == "gotcha"  # it is a valid JWE: that is the point
    assert [decryptor.decrypt_event(orjson.loads(e)) for e in sealed[1:]] == events[1:]


async def test_a_key_labelled_with_another_kid_is_still_tried() -> None:
    """--key dest_1.v2=k.pem when the values say dest_1.v1: the label is a hint, the key opens."""
    key = rsa_key()
    events = [_event(1)]
    ring = Keyring()
    ring.add(key.private, kid="dest_1.v2")
    assert [
        Decryptor(ring).decrypt_event(orjson.loads(e)) for e in await _sealed(key, events)
    ] == events


async def test_only_the_given_paths_are_decrypted() -> None:
    """only=the policy's paths: the forged free-text value is left as it came, untried."""
    key = rsa_key()
    sealed = await _sealed(key, [_event(2)])
    event = _with_forgery(key, sealed[0])
    ring = Keyring()
    ring.add(key.private)
    opened = Decryptor(ring).decrypt_event(event, only=FIELDS)
    assert opened["properties"]["comment"] == event["properties"]["comment"]
    assert opened["traits"] == _event(2)["traits"]


async def test_only_takes_values_encrypted_whole_at_a_prefix() -> None:
    """A value encrypted whole where the event's shape cut a path (docs/format.md)."""
    key = rsa_key()
    drifted = {"messageId": "m", "traits": {"tags": "not-a-list"}}
    (sealed,) = await _sealed(key, [drifted])
    ring = Keyring()
    ring.add(key.private)
    assert Decryptor(ring).decrypt_event(orjson.loads(sealed), only=FIELDS) == drifted


async def test_cli_file_goes_on_past_bad_values_with_errors_apart_from_the_bar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A JSON-lines file with a forged-kid value and an altered value among genuine events:
    every genuine line is decrypted, each bad value is one error line of its own (never on
    the progress bar's line), the exit code is 1."""
    key = rsa_key()
    events = [_event(i) for i in range(6)]
    sealed = await _sealed(key, events)
    lines = [orjson.dumps(_with_forgery(key, sealed[0]))]
    altered = orjson.loads(sealed[3])
    token = altered["traits"]["email"]
    altered["traits"]["email"] = token[:-3] + ("AAA" if token[-3:] != "AAA" else "BBB")
    lines += [sealed[1], sealed[2], orjson.dumps(altered), sealed[4], sealed[5]]
    (tmp_path / "k.pem").write_bytes(key.private_pem)
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out.jsonl"
    code = run(
        ["--key", str(tmp_path / "k.pem"), "file", str(tmp_path / "in.jsonl"), "-o", str(out)]
    )
    assert code == 1
    opened = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert len(opened) == 6
    for index in (1, 2, 4, 5):
        assert opened[index] == events[index]
    assert opened[3]["traits"]["email"] == altered["traits"]["email"]  # left as it came
    err = capsys.readouterr().err
    errors = [seg for line in err.split("\n") for seg in line.split("\r") if "line 4" in seg]
    assert len(errors) == 1
    assert errors[0].startswith("phiseal-decrypt: line 4: traits.email: ")
    assert "decrypting" in err


def test_kit_paths_read_as_the_service_reads_them() -> None:
    """--only parses policy paths to the same segments services.common.fieldpath does."""
    from phiseal_decrypt.paths import parse_path
    from services.common.fieldpath import Each, parse
    from tests.encryptsvc.test_selection import TRICKY

    for text in (*TRICKY, *FIELDS):
        expected = tuple(None if isinstance(s, Each) else s for s in parse(text).segments)
        assert parse_path(text) == expected
