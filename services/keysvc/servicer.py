"""keysvc transport: proto → domain → proto. No SQL, no domain try/except."""

from __future__ import annotations

from collections.abc import AsyncIterator
from operator import attrgetter

from phiseal.common.v1 import common_pb2
from phiseal.keys.v1 import keys_pb2, keys_pb2_grpc
from typing_extensions import override

from services.common.data.changefeed import ChangeFeed
from services.common.data.watch import watch_events
from services.common.errors import InvalidArgument
from services.common.security.auth import Caller, current_caller
from services.common.server.interceptor import Context
from services.common.server.protoconv import to_timestamp
from services.keysvc import crypto
from services.keysvc.crypto import Algorithm, Kdf, PrivateKeyDelivery
from services.keysvc.keys import Activation, KeyChange, KeyManager, KeyOrigin, KeyState, KeyVersion

_ALGORITHM = {
    common_pb2.KEY_ALGORITHM_X25519: Algorithm.X25519,
    common_pb2.KEY_ALGORITHM_RSA_2048: Algorithm.RSA_2048,
    common_pb2.KEY_ALGORITHM_RSA_3072: Algorithm.RSA_3072,
    common_pb2.KEY_ALGORITHM_RSA_4096: Algorithm.RSA_4096,
    common_pb2.KEY_ALGORITHM_MLKEM768_X25519: Algorithm.MLKEM768_X25519,
}
_ALGORITHM_PROTO = {v: k for k, v in _ALGORITHM.items()}
_STATE_PROTO = {
    KeyState.PENDING: keys_pb2.KEY_STATE_PENDING,
    KeyState.ACTIVE: keys_pb2.KEY_STATE_ACTIVE,
    KeyState.RETIRED: keys_pb2.KEY_STATE_RETIRED,
    KeyState.EXPIRED: keys_pb2.KEY_STATE_EXPIRED,
}
_ORIGIN_PROTO = {
    KeyOrigin.GENERATED: keys_pb2.KEY_ORIGIN_GENERATED,
    KeyOrigin.IMPORTED: keys_pb2.KEY_ORIGIN_IMPORTED,
}
_KDF = {
    keys_pb2.PASSPHRASE_KDF_UNSPECIFIED: None,
    keys_pb2.PASSPHRASE_KDF_SCRYPT: Kdf.SCRYPT,
    keys_pb2.PASSPHRASE_KDF_PBKDF2_SHA256: Kdf.PBKDF2_SHA256,
}
_KDF_PROTO = {
    Kdf.NONE: keys_pb2.PASSPHRASE_KDF_UNSPECIFIED,
    Kdf.SCRYPT: keys_pb2.PASSPHRASE_KDF_SCRYPT,
    Kdf.PBKDF2_SHA256: keys_pb2.PASSPHRASE_KDF_PBKDF2_SHA256,
}
_ACTIVATION = {
    keys_pb2.ACTIVATION_UNSPECIFIED: Activation.IMMEDIATE,
    keys_pb2.ACTIVATION_IMMEDIATE: Activation.IMMEDIATE,
    keys_pb2.ACTIVATION_AFTER_CONFIRMATION: Activation.AFTER_CONFIRMATION,
}


def _algorithm(value: int, default: Algorithm | None) -> Algorithm | None:
    if value == common_pb2.KEY_ALGORITHM_UNSPECIFIED:
        return default
    if value not in _ALGORITHM:
        raise InvalidArgument(
            f"algorithm {value} is unknown: use X25519, RSA_2048/3072/4096 or MLKEM768_X25519"
        )
    return _ALGORITHM[value]  # type: ignore[index]


def _kdf(value: int) -> Kdf | None:
    if value not in _KDF:
        raise InvalidArgument(f"passphrase_kdf {value} is unknown: use SCRYPT or PBKDF2_SHA256")
    return _KDF[value]  # type: ignore[index]


def _activation(value: int) -> Activation:
    if value not in _ACTIVATION:
        raise InvalidArgument(f"activation {value} is unknown: use IMMEDIATE or AFTER_CONFIRMATION")
    return _ACTIVATION[value]  # type: ignore[index]


def _request_id(given: str, caller: Caller) -> str:
    # The field wins; otherwise the call's x-request-id (random when absent).
    return given or caller.request_id


def _key(key: KeyVersion) -> keys_pb2.KeyVersion:
    return keys_pb2.KeyVersion(
        destination_id=key.destination_id,
        workspace_id=key.workspace_id,
        kid=key.kid,
        version=key.version,
        algorithm=_ALGORITHM_PROTO[key.algorithm],
        state=_STATE_PROTO[key.state],
        origin=_ORIGIN_PROTO[key.origin],
        public_key_pem=key.public_key_pem,
        public_key_jwk=key.public_key_jwk,
        fingerprint_sha256=key.fingerprint_sha256,
        created_at=to_timestamp(key.created_at),
        created_by=key.created_by,
        activated_at=to_timestamp(key.activated_at),
        retired_at=to_timestamp(key.retired_at),
        confirm_by=to_timestamp(key.confirm_by),
    )


def _delivery(delivery: PrivateKeyDelivery | None) -> keys_pb2.PrivateKeyDelivery | None:
    if delivery is None:
        return None
    return keys_pb2.PrivateKeyDelivery(
        private_key_pem=delivery.pem,
        passphrase_protected=delivery.passphrase_protected,
        kdf=_KDF_PROTO[delivery.kdf],
        kdf_cost=delivery.kdf_cost,
    )


class KeyServicer(keys_pb2_grpc.KeyServiceServicer):
    """phiseal.keys.v1.KeyService."""

    def __init__(self, keys: KeyManager, feed: ChangeFeed) -> None:
        self._keys = keys
        self._feed = feed

    @override
    async def GenerateKeyPair(
        self, request: keys_pb2.GenerateKeyPairRequest, context: Context
    ) -> keys_pb2.GenerateKeyPairResponse:
        caller = current_caller()
        created = await self._keys.generate(
            caller,
            request.destination_id,
            _algorithm(request.algorithm, Algorithm.X25519) or Algorithm.X25519,
            passphrase=request.passphrase,
            kdf=_kdf(request.passphrase_kdf),
            request_id=_request_id(request.request_id, caller),
        )
        return keys_pb2.GenerateKeyPairResponse(
            key=_key(created.key), private_key=_delivery(created.private_key)
        )

    @override
    async def RegenerateKeyPair(
        self, request: keys_pb2.RegenerateKeyPairRequest, context: Context
    ) -> keys_pb2.RegenerateKeyPairResponse:
        caller = current_caller()
        created = await self._keys.regenerate(
            caller,
            request.destination_id,
            _algorithm(request.algorithm, None),
            _activation(request.activation),
            passphrase=request.passphrase,
            kdf=_kdf(request.passphrase_kdf),
            request_id=_request_id(request.request_id, caller),
        )
        return keys_pb2.RegenerateKeyPairResponse(
            key=_key(created.key),
            private_key=_delivery(created.private_key),
            challenge=created.challenge,
            previous_version=created.previous_version,
        )

    @override
    async def ConfirmKey(
        self, request: keys_pb2.ConfirmKeyRequest, context: Context
    ) -> keys_pb2.ConfirmKeyResponse:
        key = await self._keys.confirm(
            current_caller(), request.destination_id, request.version, request.challenge_plaintext
        )
        return keys_pb2.ConfirmKeyResponse(key=_key(key))

    @override
    async def ImportPublicKey(
        self, request: keys_pb2.ImportPublicKeyRequest, context: Context
    ) -> keys_pb2.ImportPublicKeyResponse:
        caller = current_caller()
        which = request.WhichOneof("public_key")
        if which == "public_key_pem":
            public = crypto.parse_public_pem(request.public_key_pem)
        elif which == "public_key_jwk":
            public = crypto.parse_public_jwk(request.public_key_jwk)
        else:
            raise InvalidArgument("give the public key as public_key_pem or public_key_jwk")
        created = await self._keys.import_key(
            caller,
            request.destination_id,
            public,
            _activation(request.activation),
            request_id=_request_id(request.request_id, caller),
        )
        return keys_pb2.ImportPublicKeyResponse(key=_key(created.key), challenge=created.challenge)

    @override
    async def GetPublicKey(
        self, request: keys_pb2.GetPublicKeyRequest, context: Context
    ) -> keys_pb2.GetPublicKeyResponse:
        key = await self._keys.get(current_caller(), request.destination_id, request.version)
        return keys_pb2.GetPublicKeyResponse(key=_key(key))

    @override
    async def ListKeyVersions(
        self, request: keys_pb2.ListKeyVersionsRequest, context: Context
    ) -> keys_pb2.ListKeyVersionsResponse:
        keys = await self._keys.list_versions(current_caller(), request.destination_id)
        return keys_pb2.ListKeyVersionsResponse(versions=[_key(k) for k in keys])

    @override
    async def WatchKeys(
        self, request: keys_pb2.WatchKeysRequest, context: Context
    ) -> AsyncIterator[keys_pb2.WatchKeysResponse]:
        wanted = await self._keys.authorize_watch(current_caller(), request.destination_ids)
        # Leaving the stream (client gone) must unsubscribe, or the queue grows forever.
        with self._feed.subscribe() as subscription:
            events = watch_events(
                subscription, KeyChange.from_payload, attrgetter("destination_id"), wanted
            )
            async for event in events:
                change = event.change
                if change is None:
                    yield keys_pb2.WatchKeysResponse(kind=event.kind, observed_at=event.observed_at)
                    continue
                yield keys_pb2.WatchKeysResponse(
                    kind=event.kind,
                    destination_id=change.destination_id,
                    version=change.version,
                    state=_STATE_PROTO[change.state],
                    observed_at=event.observed_at,
                )
