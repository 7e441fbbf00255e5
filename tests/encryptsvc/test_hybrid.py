"""Hybrid ML-KEM-768 + X25519 destinations: HPKE-9-KE fields, opened by the kit and by Node."""

from __future__ import annotations

import base64
import json
from typing import Any

import orjson
import pytest
from phiseal.encrypt.v1 import encrypt_pb2

from phiseal_decrypt import BindingMismatch, DecryptError, Decryptor, Keyring, xwing
from phiseal_decrypt.jose import b64url
from services.common.errors import FailedPrecondition
from services.common.fieldpath import find, parse_selection
from services.common.vocabulary import EncryptionFormat
from services.encryptsvc.envelope import HpkeSealer, new_sealer
from tests.encryptsvc.conftest import Stack
from tests.encryptsvc.keys import hybrid_key
from tests.encryptsvc.stack import FIELDS, HYBRID, SAMPLES
from tests.interop.conftest import NodeCall, node  # noqa: F401  (the fixture, shared)

DEST = "dest_1"


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _header(token: str) -> dict[str, Any]:
    header: dict[str, Any] = json.loads(_unb64(token.split(".")[0]))
    return header


def _decryptor() -> Decryptor:
    ring = Keyring()
    ring.add(hybrid_key().private)
    return Decryptor(ring)


def test_fields_are_hpke_9_ke_bound_and_share_one_encapsulation() -> None:
    """Every field names HPKE-9-KE / A256GCM, the kid and its place; a batch's fields carry the
    same "ek" and encrypted key (one HPKE encapsulation per CEK), and the kit opens them all with
    one decapsulation."""
    sealer = new_sealer(EncryptionFormat.JWE, hybrid_key().recipient, DEST)
    tokens = [sealer.seal(b'"E11.9"', f"m-{i}", "properties.diagnosis") for i in range(3)]
    headers = [_header(t) for t in tokens]
    decryptor = _decryptor()
    opened = [
        decryptor.decrypt_value(t, message_id=f"m-{i}", path="properties.diagnosis")
        for i, t in enumerate(tokens)
    ]
    assert isinstance(sealer, HpkeSealer)
    assert {(h["alg"], h["enc"], h["kid"]) for h in headers} == {
        ("HPKE-9-KE", "A256GCM", "dest_1.v1")
    }
    assert headers[0]["phiseal"] == {"dst": DEST, "mid": "m-0", "path": "properties.diagnosis"}
    assert len({h["ek"] for h in headers}) == len({t.split(".")[1] for t in tokens}) == 1
    assert len(_unb64(headers[0]["ek"])) == xwing.ENC_BYTES
    assert (opened, decryptor.unwraps) == (["E11.9"] * 3, 1)


def test_cek_rolls_to_a_new_encapsulation_past_its_use_cap() -> None:
    """Past max_uses a new CEK is wrapped: a new "ek", and the kit unwraps once per CEK."""
    sealer = new_sealer(EncryptionFormat.JWE, hybrid_key().recipient, DEST, max_uses=2)
    tokens = [sealer.seal(b"1", "m", "properties.n") for _ in range(5)]
    decryptor = _decryptor()
    for token in tokens:
        decryptor.decrypt_value(token, message_id="m", path="properties.n")
    assert (len({_header(t)["ek"] for t in tokens}), decryptor.unwraps) == (3, 3)


@pytest.mark.parametrize("part", [0, 1, 3, 4])
def test_one_changed_character_fails(part: int) -> None:
    """A changed character in the header (ek included), wrapped key, ciphertext or tag fails."""
    token = new_sealer(EncryptionFormat.JWE, hybrid_key().recipient, DEST).seal(b'"x"', "m", "p")
    parts = token.split(".")
    middle = len(parts[part]) // 2
    flipped = "A" if parts[part][middle] != "A" else "B"
    parts[part] = parts[part][:middle] + flipped + parts[part][middle + 1 :]
    with pytest.raises(DecryptError):
        _decryptor().decrypt_value(".".join(parts), message_id="m", path="p")


def test_moved_value_is_refused() -> None:
    """A field moved to another path fails its binding check."""
    token = new_sealer(EncryptionFormat.JWE, hybrid_key().recipient, DEST).seal(b"1", "m", "a")
    with pytest.raises(BindingMismatch):
        _decryptor().decrypt_value(token, message_id="m", path="b")


def test_segment_format_with_a_hybrid_key_names_the_fix() -> None:
    """SEGMENT_RSA_OAEP needs RSA: FAILED_PRECONDITION naming the key type and the fix."""
    with pytest.raises(FailedPrecondition) as refused:
        new_sealer(EncryptionFormat.SEGMENT_RSA_OAEP, hybrid_key().recipient, DEST)
    assert "ML-KEM-768 + X25519" in refused.value.message


async def test_encryptsvc_output_opens_in_node_and_node_output_in_the_kit(
    stack: Stack,
    node: NodeCall,  # noqa: F811  (pytest passes the imported fixture)
) -> None:
    """A destination keyed ML-KEM-768 + X25519 by keysvc: every field EncryptEvents writes opens
    in Node's `hpke` (HPKE-9-KE) to the JSON of the original value, the kit opens the events with
    one decapsulation, and fields Node seals to the same public key open in the kit."""
    destination, key = await stack.admin.encrypting_destination(
        stack.workspace_id, algorithm=HYBRID, name="Post-quantum webhook"
    )
    request = encrypt_pb2.EncryptEventsRequest(
        destination_id=destination, events=[orjson.dumps(e) for e in SAMPLES]
    )
    response = await stack.stub.EncryptEvents(request, timeout=10)
    sealed = [orjson.loads(r.event) for r in response.results]
    tokens, expected = [], []
    for original, event in zip(SAMPLES, sealed, strict=True):
        for path in parse_selection(FIELDS):
            for sealed_at, original_at in zip(find(event, path), find(original, path), strict=True):
                tokens.append(sealed_at.container[sealed_at.key])  # type: ignore[index]
                expected.append(orjson.loads(orjson.dumps(original_at.container[original_at.key])))  # type: ignore[index]
    private = key.private
    assert isinstance(private, xwing.XWingPrivateKey)
    seed = b64url(private.pkcs8_der[-xwing.SEED_BYTES :])
    from_node = node("open-fields", seed=seed, tokens=tokens)["fields"]
    ring = Keyring()
    ring.add(private)
    decryptor = Decryptor(ring)
    assert [decryptor.decrypt_event(e, destination_id=destination) for e in sealed] == SAMPLES
    assert decryptor.unwraps == 1
    assert [json.loads(f["plaintext"]) for f in from_node] == expected
    assert {f["kid"] for f in from_node} == {response.kid}
    public = b64url(private.public.raw)
    fields = [{"mid": "m-9", "path": "traits.email", "plaintext": '"pat@example.com"'}]
    node_tokens = node("seal-fields", pub=public, kid=key.kid, dst=destination, fields=fields)
    opened = decryptor.decrypt_value(
        node_tokens["tokens"][0], message_id="m-9", path="traits.email", destination_id=destination
    )
    assert opened == "pat@example.com"
