"""keysvc key material: generation per algorithm, passphrase KDF cost against the weak default.

The strong KDFs are slow on purpose: the ratio against `cryptography`'s BestAvailableEncryption
(PBKDF2, 2,048 rounds) shows how much more work each guess of a passphrase costs an attacker.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519

from services.keysvc import crypto
from services.keysvc.crypto import Algorithm, Kdf

PASSPHRASE = "Tide-Pool 42 otters"


def _median_ms(work: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    for algorithm, runs in (
        (Algorithm.X25519, 200),
        (Algorithm.RSA_2048, 10),
        (Algorithm.RSA_3072, 5),
        (Algorithm.RSA_4096, 3),
        (Algorithm.MLKEM768_X25519, 200),
    ):
        ms = _median_ms(lambda a=algorithm: crypto.generate(a), runs)  # type: ignore[misc]
        print(f"generate {algorithm:15}  median {ms:9.2f} ms  ({runs} runs)")

    pair = crypto.generate(Algorithm.X25519)
    private = pair._private  # the benchmark measures serialisation of the same key
    assert isinstance(private, x25519.X25519PrivateKey)
    weak = _median_ms(
        lambda: private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(PASSPHRASE.encode()),
        ),
        20,
    )
    print(f"PKCS#8 cryptography default (PBKDF2 2,048)  median {weak:8.2f} ms  ratio 1.0")
    for kdf in (Kdf.PBKDF2_SHA256, Kdf.SCRYPT):
        ms = _median_ms(lambda k=kdf: pair.deliver(PASSPHRASE, k), 5)  # type: ignore[misc]
        print(f"PKCS#8 {kdf:34}  median {ms:8.2f} ms  ratio {ms / weak:6.1f}x")
