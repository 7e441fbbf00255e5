"""HPKE-9-KE fields and X-Wing keys against Node implementations that are not ours."""

from __future__ import annotations

import base64
import json

from cryptography.hazmat.primitives import hpke

from phiseal_decrypt import Decryptor, Keyring, xwing
from phiseal_decrypt.jose import b64url
from services.keysvc import crypto
from services.keysvc.crypto import Algorithm, Kdf
from tests.interop.conftest import NodeCall

# The RFC 9180 suite @hpke/core can build around X-Wing: same KEM, its only KDF family.
CORE_SUITE = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _generated() -> tuple[xwing.XWingPrivateKey, str]:
    """A keysvc-generated pair: the private key as the customer loads it, the seed for Node."""
    pair = crypto.generate(Algorithm.MLKEM768_X25519)
    pem = pair.deliver("", Kdf.NONE).pem
    ring = Keyring()
    ring.add_pem(pem.encode(), source="delivered")
    private = ring.entries[0].key
    assert isinstance(private, xwing.XWingPrivateKey)
    der = xwing.pem_body(pem, "PRIVATE KEY")
    assert der is not None
    return private, b64url(der[-xwing.SEED_BYTES :])


def test_node_seals_a_batch_the_kit_opens_with_one_unwrap(node: NodeCall) -> None:
    """Fields Node writes (one CEK wrapped once with `hpke`'s HPKE-9-KE, A256GCM per field) open
    in the kit with their bindings checked and a single HPKE decapsulation for the batch."""
    private, _ = _generated()
    fields = [
        {"mid": "m-1", "path": "properties.diagnosis", "plaintext": '"E11.9"'},
        {"mid": "m-2", "path": "traits.mrn", "plaintext": '{"n":12345678901234567890}'},
    ]
    tokens = node(
        "seal-fields", pub=b64url(private.public.raw), kid="d.v1", dst="d", fields=fields
    )["tokens"]
    ring = Keyring()
    ring.add(private, "d.v1")
    decryptor = Decryptor(ring)
    opened = [
        decryptor.decrypt_value(t, message_id=f["mid"], path=f["path"], destination_id="d")
        for t, f in zip(tokens, fields, strict=True)
    ]
    assert (opened, decryptor.unwraps) == (["E11.9", {"n": 12345678901234567890}], 1)


def test_node_opens_what_the_kit_format_writes(node: NodeCall) -> None:
    """A compact HPKE-9-KE JWE written with PHIseal's definitions opens in Node's `hpke`."""
    private, seed = _generated()
    claims = {"dst": "d", "mid": "m-1", "path": "properties.a"}
    token = xwing.seal_compact(private.public, {"kid": "d.v1", "phiseal": claims}, b'"x"')
    opened = node("open-fields", seed=seed, tokens=[token])["fields"]
    assert opened == [{"kid": "d.v1", "claims": claims, "plaintext": '"x"'}]


def test_hpke_core_xwing_and_cryptography_agree_both_ways(node: NodeCall) -> None:
    """@hpke/core + @hpke/hybridkem-x-wing and cryptography's MLKEM768_X25519 are the same KEM
    with the same key encodings: each opens what the other sealed to a keysvc-generated key."""
    private, seed = _generated()
    sealed = node(
        "xwing-seal", pub=b64url(private.public.raw), info="phiseal", plaintext="to python"
    )["sealed"]
    from_node = CORE_SUITE.decrypt(_b64url(sealed), private.hpke_key, info=b"phiseal")
    to_node = CORE_SUITE.encrypt(b"to node", private.public.hpke_key, info=b"phiseal")
    opened = node("xwing-open", seed=seed, info="phiseal", sealed=b64url(to_node))
    assert (from_node, opened["plaintext"]) == (b"to python", "to node")


def test_public_jwk_from_keysvc_is_what_node_encrypts_to(node: NodeCall) -> None:
    """The "pub" of keysvc's AKP JWK is the serialized key Node deserializes and seals to."""
    private, _ = _generated()
    pair_jwk = json.loads(xwing.jwk_text(private.public, "d.v1"))
    tokens = node(
        "seal-fields",
        pub=pair_jwk["pub"],
        kid="d.v1",
        dst="d",
        fields=[{"mid": "m", "path": "context.ip", "plaintext": "true"}],
    )["tokens"]
    ring = Keyring()
    ring.add(private)
    assert Decryptor(ring).decrypt_value(tokens[0], message_id="m", path="context.ip") is True
