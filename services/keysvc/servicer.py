"""keysvc transport: proto → domain → proto. No SQL, no domain try/except."""

from __future__ import annotations

from collections.abc import AsyncIterator

from phiseal.keys.v1 import keys_pb2, keys_pb2_grpc
from typing_extensions import override

from services.common.errors import Unimplemented
from services.common.interceptor import Context


def _missing(rpc: str) -> str:
    return f"{rpc} is not implemented yet: key management lands with the keysvc issue"


class KeyServicer(keys_pb2_grpc.KeyServiceServicer):
    """phiseal.keys.v1.KeyService."""

    @override
    async def GenerateKeyPair(
        self, request: keys_pb2.GenerateKeyPairRequest, context: Context
    ) -> keys_pb2.GenerateKeyPairResponse:
        raise Unimplemented(_missing("GenerateKeyPair"))

    @override
    async def RegenerateKeyPair(
        self, request: keys_pb2.RegenerateKeyPairRequest, context: Context
    ) -> keys_pb2.RegenerateKeyPairResponse:
        raise Unimplemented(_missing("RegenerateKeyPair"))

    @override
    async def ConfirmKey(
        self, request: keys_pb2.ConfirmKeyRequest, context: Context
    ) -> keys_pb2.ConfirmKeyResponse:
        raise Unimplemented(_missing("ConfirmKey"))

    @override
    async def ImportPublicKey(
        self, request: keys_pb2.ImportPublicKeyRequest, context: Context
    ) -> keys_pb2.ImportPublicKeyResponse:
        raise Unimplemented(_missing("ImportPublicKey"))

    @override
    async def GetPublicKey(
        self, request: keys_pb2.GetPublicKeyRequest, context: Context
    ) -> keys_pb2.GetPublicKeyResponse:
        raise Unimplemented(_missing("GetPublicKey"))

    @override
    async def ListKeyVersions(
        self, request: keys_pb2.ListKeyVersionsRequest, context: Context
    ) -> keys_pb2.ListKeyVersionsResponse:
        raise Unimplemented(_missing("ListKeyVersions"))

    @override
    async def WatchKeys(
        self, request: keys_pb2.WatchKeysRequest, context: Context
    ) -> AsyncIterator[keys_pb2.WatchKeysResponse]:
        for _ in ():  # an async generator, like the real stream will be
            yield keys_pb2.WatchKeysResponse()
        raise Unimplemented(_missing("WatchKeys"))
