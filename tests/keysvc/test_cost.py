"""keysvc reads nothing a caller sends before the caller is authorized."""

from __future__ import annotations

import grpc
from phiseal.keys.v1 import keys_pb2, keys_pb2_grpc

from phiseal_dev.testing import session_secrets
from services.common.security.auth import Role
from tests.keysvc.conftest import Keys


async def test_a_stranger_importing_a_key_is_refused_before_the_key_is_read(keys: Keys) -> None:
    """An admin of another workspace sending an unreadable key gets PERMISSION_DENIED, not a
    verdict on the key: the key text is parsed only after authorization."""
    token = session_secrets().token("mallory", {"ws_elsewhere": [Role.ADMIN]})
    stranger = keys_pb2_grpc.KeyServiceStub(keys.service.channel(token=token))
    codes = []
    for request in (
        keys_pb2.ImportPublicKeyRequest(
            destination_id=keys.destination_id, public_key_pem="-----BEGIN PUBLIC KEY-----\nx"
        ),
        keys_pb2.ImportPublicKeyRequest(
            destination_id=keys.destination_id, public_key_jwk="[" * 10_000
        ),
    ):
        try:
            await stranger.ImportPublicKey(request)
            codes.append(grpc.StatusCode.OK)
        except grpc.aio.AioRpcError as exc:
            codes.append(exc.code())
    assert codes == [grpc.StatusCode.PERMISSION_DENIED] * 2
