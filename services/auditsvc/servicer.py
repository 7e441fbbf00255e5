"""auditsvc transport: proto → domain → proto. No SQL, no domain try/except."""

from __future__ import annotations

from collections.abc import AsyncIterator

from phiseal.audit.v1 import audit_pb2, audit_pb2_grpc
from typing_extensions import override

from services.common.errors import Unimplemented
from services.common.interceptor import Context


def _missing(rpc: str) -> str:
    return (
        f"{rpc} is not implemented yet: the tamper-evident audit log land with the auditsvc issue"
    )


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    """phiseal.audit.v1.AuditService."""

    @override
    async def RecordEvents(
        self, request: audit_pb2.RecordEventsRequest, context: Context
    ) -> audit_pb2.RecordEventsResponse:
        raise Unimplemented(_missing("RecordEvents"))

    @override
    async def QueryEvents(
        self, request: audit_pb2.QueryEventsRequest, context: Context
    ) -> audit_pb2.QueryEventsResponse:
        raise Unimplemented(_missing("QueryEvents"))

    @override
    async def ExportEvents(
        self, request: audit_pb2.ExportEventsRequest, context: Context
    ) -> AsyncIterator[audit_pb2.ExportEventsResponse]:
        for _ in ():  # an async generator, like the real stream will be
            yield audit_pb2.ExportEventsResponse()
        raise Unimplemented(_missing("ExportEvents"))

    @override
    async def VerifyChain(
        self, request: audit_pb2.VerifyChainRequest, context: Context
    ) -> audit_pb2.VerifyChainResponse:
        raise Unimplemented(_missing("VerifyChain"))
