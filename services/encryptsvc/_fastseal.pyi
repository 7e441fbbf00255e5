# The C extension services/encryptsvc/_fastseal.c (built when a compiler and OpenSSL's headers
# are present; envelope.py falls back to its Python sealing otherwise).

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
