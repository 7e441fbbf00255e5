# The C extension services/encryptsvc/_fastseal.c (built when a compiler and OpenSSL's headers
# are present; envelope.py falls back to its Python sealing otherwise).

from collections.abc import Callable
from typing import Any

class Sealer:
    def __init__(self, key: bytes, /) -> None: ...
    def seal(
        self,
        protected_head: bytes,
        header_rest: bytes,
        middle: bytes,
        iv: bytes,
        plaintext: bytes,
        /,
    ) -> str: ...
    def seal_into(
        self,
        protected_head: bytes,
        event_head: bytes,
        middle: bytes,
        ivs: bytes,
        plaintexts: list[bytes],
        located: list[tuple[Any, str | int, str]],
        closings: dict[str, bytes],
        closing: Callable[[str], bytes],
        /,
    ) -> None: ...

def plaintexts(
    located: list[tuple[Any, str | int, str]], dumps: Callable[[Any], bytes], /
) -> tuple[list[bytes], int, int]: ...
