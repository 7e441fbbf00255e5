"""encryptsvc transport: proto → domain → proto. No SQL, no domain try/except."""

from __future__ import annotations

from phiseal.encrypt.v1 import encrypt_pb2, encrypt_pb2_grpc
from typing_extensions import override

from services.common.server.interceptor import Context
from services.common.server.protoconv import format_to_proto
from services.encryptsvc.encryption import BatchResult, Encryptor


def to_proto(result: BatchResult) -> encrypt_pb2.EncryptEventsResponse:
    response = encrypt_pb2.EncryptEventsResponse(
        policy_version=result.policy_version,
        kid=result.kid,
        encryption_enabled=result.enabled,
        format=format_to_proto(result.format),
    )
    # Each result made in place: building EventResults first and handing the list over copies
    # every one again, twice the cost of the whole response.
    add = response.results.add
    for outcome in result.outcomes:
        error = outcome.error
        if error is None:
            add(event=outcome.event or b"", encrypted_fields=outcome.encrypted_fields)
        else:
            add(
                error=encrypt_pb2.EventError(
                    code=error.code, message=error.message, path=error.path
                )
            )
    return response


class EncryptServicer(encrypt_pb2_grpc.EncryptServiceServicer):
    """phiseal.encrypt.v1.EncryptService."""

    def __init__(self, encryptor: Encryptor) -> None:
        self._encryptor = encryptor

    @override
    async def EncryptEvents(
        self, request: encrypt_pb2.EncryptEventsRequest, context: Context
    ) -> encrypt_pb2.EncryptEventsResponse:
        result = await self._encryptor.encrypt(request.destination_id, request.events)
        return to_proto(result)
