"""The kit opens keysvc's key-confirmation challenges: the answer ConfirmKey wants back."""

from __future__ import annotations

import pytest

from phiseal_decrypt import Decryptor, Keyring, WrongKey
from services.keysvc import crypto
from services.keysvc.crypto import Algorithm, Kdf


@pytest.mark.parametrize("algorithm", [Algorithm.X25519, Algorithm.RSA_2048])
def test_the_kit_opens_a_challenge_with_the_new_private_key(algorithm: Algorithm) -> None:
    """Decrypting the challenge JWE with the new key gives exactly the hashed answer."""
    pair = crypto.generate(algorithm)
    challenge = crypto.make_challenge(pair.public, "dst_1.v2")
    ring = Keyring()
    ring.add_pem(pair.deliver("", Kdf.NONE).pem.encode(), source="test")
    answer = Decryptor(ring).open_challenge(challenge.jwe)
    assert crypto.hash_secret(answer) == challenge.answer_hash


def test_another_key_cannot_open_the_challenge() -> None:
    """The old private key (or anyone else's) does not answer the new key's challenge."""
    challenge = crypto.make_challenge(crypto.generate(Algorithm.X25519).public, "dst_1.v2")
    ring = Keyring()
    ring.add_pem(
        crypto.generate(Algorithm.X25519).deliver("", Kdf.NONE).pem.encode(), source="test"
    )
    with pytest.raises(WrongKey):
        Decryptor(ring).open_challenge(challenge.jwe)
