"""encryptsvc transport: proto → domain → proto. No SQL, no domain try/except."""

from __future__ import annotations

from phiseal.encrypt.v1 import encrypt_pb2, encrypt_pb2_grpc
from typing_extensions import override

from services.common.server.interceptor import Context
from services.common.server.protoconv import format_to_proto
from services.encryptsvc.encryption import BatchResult, Encryptor, EventOutcome


def _result(outcome: EventOutcome) -> encrypt_pb2.EventResult:
    if outcome.error is not None:
        error = outcome.error
        return encrypt_pb2.EventResult(
            error=encrypt_pb2.EventError(code=error.code, message=error.message, path=error.path)
        )
    return encrypt_pb2.EventResult(
        event=outcome.event or b"", encrypted_fields=outcome.encrypted_fields
    )


def to_proto(result: BatchResult) -> encrypt_pb2.EncryptEventsResponse:
    results = [_result(o) for o in result.outcomes]
    return encrypt_pb2.EncryptEventsResponse(
        results=results,
        policy_version=result.policy_version,
        kid=result.kid,
        encryption_enabled=result.enabled,
        format=format_to_proto(result.format),
    )


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
