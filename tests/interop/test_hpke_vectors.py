"""The JOSE HPKE PQ draft's own HPKE-9-KE example opens with PHIseal's definitions."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from phiseal_decrypt import xwing
from phiseal_decrypt.jose import ENC

DATA = Path(__file__).parents[1] / "data" / "hpke"


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_draft_hpke_9_ke_example_opens() -> None:
    """draft-ietf-jose-hpke-pq-pqt-00's HPKE-9-KE compact example (written by another
    implementation) opens with the kit's X-Wing key expansion, Recipient_structure and suite,
    and its "pub" is the public key the kit derives from "priv"."""
    jwk = json.loads((DATA / "HPKE-9-KE.jwk.json").read_text())
    protected, encrypted_key, iv, body, tag = (
        (DATA / "HPKE-9-KE.compact.txt").read_text().strip().split(".")
    )
    header = json.loads(_b64url(protected))
    private = xwing.XWingPrivateKey(_b64url(jwk["priv"]))
    cek = xwing.unwrap(private, _b64url(header["ek"]), _b64url(encrypted_key), header["enc"])
    assert cek is not None
    plaintext = AESGCM(cek).decrypt(_b64url(iv), _b64url(body) + _b64url(tag), protected.encode())
    assert (header["alg"], header["enc"]) == (xwing.ALG_HPKE, ENC)
    assert private.public.raw == _b64url(jwk["pub"])
    assert plaintext.startswith(b"You can trust us to stick with you")
