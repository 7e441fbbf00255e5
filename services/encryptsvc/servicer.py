"""encryptsvc transport: proto → domain → wire bytes. No SQL, no domain try/except."""

from __future__ import annotations

import grpc
from phiseal.encrypt.v1 import encrypt_pb2

from services.common.server.interceptor import Context
from services.encryptsvc.encryption import Encryptor
from services.encryptsvc.wire import encode_response, passthrough

SERVICE = "phiseal.encrypt.v1.EncryptService"


class EncryptServicer:
    """phiseal.encrypt.v1.EncryptService. EncryptEvents answers the response already serialised
    (services/encryptsvc/wire.py), so it is registered with its own serializer (``register``)
    rather than the generated one."""

    def __init__(self, encryptor: Encryptor) -> None:
        self._encryptor = encryptor

    async def EncryptEvents(
        self, request: encrypt_pb2.EncryptEventsRequest, context: Context
    ) -> bytes:
        result = await self._encryptor.encrypt(request.destination_id, request.events)
        return encode_response(result)

    def register(self, server: grpc.aio.Server) -> None:
        """What encrypt_pb2_grpc.add_EncryptServiceServicer_to_server does, with the
        serializer that passes encode_response's bytes through."""
        handlers = {
            "EncryptEvents": grpc.unary_unary_rpc_method_handler(
                self.EncryptEvents,
                request_deserializer=encrypt_pb2.EncryptEventsRequest.FromString,
                response_serializer=passthrough,
            )
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        # As generated code does since grpcio 1.62: the method found without a generic lookup.
        server.add_registered_method_handlers(SERVICE, handlers)  # type: ignore[attr-defined]
