"""encryptsvc transport: proto → domain → proto. No SQL, no domain try/except."""

from __future__ import annotations

from phiseal.encrypt.v1 import encrypt_pb2, encrypt_pb2_grpc
from typing_extensions import override

from services.common.errors import Unimplemented
from services.common.interceptor import Context


def _missing(rpc: str) -> str:
    return (
        f"{rpc} is not implemented yet: the EncryptEvents hot path land with the encryptsvc issue"
    )


class EncryptServicer(encrypt_pb2_grpc.EncryptServiceServicer):
    """phiseal.encrypt.v1.EncryptService."""

    @override
    async def EncryptEvents(
        self, request: encrypt_pb2.EncryptEventsRequest, context: Context
    ) -> encrypt_pb2.EncryptEventsResponse:
        raise Unimplemented(_missing("EncryptEvents"))
