"""Channels to peer services: one place to decide transport security and call options."""

from __future__ import annotations

import grpc

from services.common.server import DEFAULT_MAX_MESSAGE_BYTES

# Calls between services are retried by the caller's own logic; keepalive finds dead peers
# (a watch stream on a half-open TCP connection would otherwise look healthy forever).
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", DEFAULT_MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", DEFAULT_MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
]


def open_channel(address: str) -> grpc.aio.Channel:
    """A channel to a peer at ``host:port``. Plaintext until the security issue adds mTLS."""
    return grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS)
