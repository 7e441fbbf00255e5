"""Channels to peer services: one place to decide transport security and call identity."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from services.common.security.auth import SERVICE_HEADER
from services.common.security.tls import TlsFiles, channel_credentials, server_name
from services.common.server.config import ConfigError, SecuritySettings
from services.common.server.grpc_server import DEFAULT_MAX_MESSAGE_BYTES

# Keepalive finds dead peers: a watch stream on a half-open TCP connection would otherwise look
# healthy forever.
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", DEFAULT_MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", DEFAULT_MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # gRPC's default reconnect backoff grows to 120 s: a peer back from an outage would stay
    # unused (and encryptsvc UNAVAILABLE) for up to two minutes.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5_000),
]


class _IdentifyAs:
    """Adds the calling service's name to every call (the insecure development mode only)."""

    def __init__(self, service: str) -> None:
        self._service = service

    def _details(self, details: Any) -> Any:
        metadata = list(details.metadata or ())
        metadata.append((SERVICE_HEADER, self._service))
        return details._replace(metadata=metadata)


# grpc.aio files an interceptor under the first call type it implements only (an elif
# chain): one object per call type, or watch streams would go out unnamed.
class _IdentifyUnary(_IdentifyAs, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return await continuation(self._details(details), request)


class _IdentifyStream(_IdentifyAs, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return await continuation(self._details(details), request)


def open_channel(
    address: str, caller: str, tls: TlsFiles | None = None, *, peer: str | None = None
) -> grpc.aio.Channel:
    """A channel from service ``caller`` to a peer's ``host:port``.

    With ``tls``: mutual TLS presenting ``caller``'s certificate (the peer port), and the
    server must prove to be ``peer``: its certificate must carry that service's name, whatever
    ``address`` is (a right port is no proof: any certificate from our CA was valid for
    localhost). Without: plaintext, naming the caller in metadata, which only the development
    authenticator believes.
    """
    if tls is not None:
        if peer is None:
            raise ValueError("a TLS peer channel must name the service it calls")
        options = [*_CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", server_name(peer))]
        return grpc.aio.secure_channel(address, channel_credentials(tls), options=options)
    return grpc.aio.insecure_channel(
        address,
        options=_CHANNEL_OPTIONS,
        interceptors=[_IdentifyUnary(caller), _IdentifyStream(caller)],  # type: ignore[list-item]
    )


def open_peer_channel(
    address: str, caller: str, security: SecuritySettings, *, peer: str
) -> grpc.aio.Channel:
    """A channel from ``caller`` to service ``peer``'s peer port as the settings ask (mutual
    TLS, checking the server is ``peer``, unless insecure)."""
    if security.insecure:
        return open_channel(address, caller)
    files = TlsFiles.in_dir(security.secrets_dir, caller)
    try:
        return open_channel(address, caller, files, peer=peer)
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None
