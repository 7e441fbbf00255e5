"""The hostile-JSON parser's cost on the hot path: exact numbers against plain orjson.loads.

Prints, per kind of event, the parser's time per event as a ratio of ``orjson.loads`` (what
EncryptEvents called before numbers were kept exact) and as a share of a whole in-process
``Encryptor.encrypt`` of the same events under the 15-field sample policy (X25519, JWE).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable

import orjson

from services.common.hostile_json import parse_object
from services.common.vocabulary import EncryptionFormat
from services.encryptsvc.encryption import Encryptor, Limits, Policy
from tests.encryptsvc.keys import x25519_key
from tests.encryptsvc.stack import FIELDS, SAMPLE_LINES
from tests.encryptsvc.test_encryption import FixedSource

ROUNDS = 7


def _per_event(fn: Callable[[bytes], object], events: list[bytes]) -> float:
    """Median over rounds of the seconds per event."""
    times = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for raw in events:
            fn(raw)
        times.append((time.perf_counter() - start) / len(events))
    return statistics.median(times)


def _with(old: bytes, new: bytes) -> list[bytes]:
    return [line.replace(old, new, 1) for line in SAMPLE_LINES]


async def main() -> None:
    kinds = {
        # The sample events as they are (integers, floats such as 19.99, ISO timestamps).
        "samples as they are": list(SAMPLE_LINES),
        # Integers only: one regex search decides, nothing else is done.
        "integers only": [orjson.dumps(_drop_floats(orjson.loads(line))) for line in SAMPLE_LINES],
        # An order id past 2^64 in every event: the exact (standard library) path.
        "a number past 2^64": _with(b'{"', b'{"order_id":123456789012345678901234567890,"'),
    }
    key = x25519_key()
    encryptor = Encryptor(
        FixedSource(Policy("dest_1", 1, True, EncryptionFormat.JWE, tuple(FIELDS)), key),
        Limits(),
    )

    def parse(raw: bytes) -> object:
        return parse_object(raw, what="the event", max_bytes=1 << 18, max_depth=32)

    print(f"{'events':<22}{'orjson.loads':>14}{'parser':>10}{'ratio':>8}{'of encrypt':>12}")
    for name, events in kinds.items():
        batch = events * (1000 // len(events))
        baseline = _per_event(orjson.loads, batch)
        ours = _per_event(parse, batch)
        times = []
        for _ in range(ROUNDS):
            start = time.perf_counter()
            await encryptor.encrypt("dest_1", batch)
            times.append((time.perf_counter() - start) / len(batch))
        whole = statistics.median(times)
        print(
            f"{name:<22}{baseline * 1e6:>12.1f}µs{ours * 1e6:>8.1f}µs"
            f"{ours / baseline:>7.2f}x{ours / whole:>11.1%}"
        )


def _drop_floats(value: object) -> object:
    if isinstance(value, dict):
        return {k: _drop_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_drop_floats(v) for v in value]
    return round(value) if isinstance(value, float) else value


if __name__ == "__main__":
    asyncio.run(main())
