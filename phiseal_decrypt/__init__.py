"""PHIseal decryption kit: open what PHIseal encrypted for your destination, with your private key.

    from phiseal_decrypt import Decryptor, Keyring

    keys = Keyring.from_files(["dest_1.v1.pem"])
    event = Decryptor(keys).decrypt_event(received_event)

Stand-alone: it needs only ``cryptography`` and ``orjson`` (``tqdm`` for the CLI's progress bar)
and never talks to PHIseal. See the README's "Ciphertext formats" and "Decrypting" sections.
"""

from phiseal_decrypt.core import (
    BindingMismatch,
    DecryptError,
    Decryptor,
    Keyring,
    PassphraseRequired,
    WrongKey,
    concrete_key,
    looks_like_jwe,
)

__all__ = [
    "BindingMismatch",
    "DecryptError",
    "Decryptor",
    "Keyring",
    "PassphraseRequired",
    "WrongKey",
    "concrete_key",
    "looks_like_jwe",
]
