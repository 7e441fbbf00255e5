"""The benchmark's baselines, each served exactly as encryptsvc is, in a process of its own.

Each is an ``EncryptService`` in its own process, built by ``GrpcServer.from_settings`` from the
``ENCRYPTSVC_*`` settings: the same TLS and mutual-TLS ports, certificate, interceptor, token
and certificate authentication and rules as encryptsvc, one process. Modes:
  echo   returns the events untouched: the transport floor
  jose   jwcrypto, one JWE with a fresh content key (one RSA-OAEP-256 operation) per field
  rsa    raw RSA-OAEP-SHA256 per field (Segment's format; one block per 190 bytes)
jose and rsa encrypt the fields of BASELINE_FIELDS (comma-separated paths) to the RSA public key
in the PEM file BASELINE_PUBLIC_KEY, named BASELINE_KID.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from phiseal.encrypt.v1 import encrypt_pb2, encrypt_pb2_grpc
from typing_extensions import override

from services.common.fieldpath import FieldPath, find, parse_selection
from services.common.server.config import Env, ServerSettings
from services.common.server.grpc_server import GrpcServer, ServerParts, run_until_signal
from services.common.server.interceptor import Context
from services.common.server.logging import configure_logging
from services.encryptsvc.app import SERVICE_NAME
from services.encryptsvc.rules import RULES

MODES = ("echo", "jose", "rsa")
_OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)

Transform = Callable[[dict[str, Any]], None]


class BaselineServicer(encrypt_pb2_grpc.EncryptServiceServicer):
    """Parses each event and applies ``transform`` to it (or echoes the bytes when None)."""

    def __init__(self, transform: Transform | None) -> None:
        self._transform = transform

    @override
    async def EncryptEvents(
        self, request: encrypt_pb2.EncryptEventsRequest, context: Context
    ) -> encrypt_pb2.EncryptEventsResponse:
        if self._transform is None:
            results = [encrypt_pb2.EventResult(event=e) for e in request.events]
        else:
            results = []
            for raw in request.events:
                event = orjson.loads(raw)
                self._transform(event)
                results.append(encrypt_pb2.EventResult(event=orjson.dumps(event)))
        return encrypt_pb2.EncryptEventsResponse(results=results)


def jose_per_field(paths: list[FieldPath], pem: bytes, kid: str) -> Transform:
    from jwcrypto import jwe, jwk

    public = jwk.JWK.from_pem(pem)
    protected = orjson.dumps({"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": kid}).decode()

    def transform(event: dict[str, Any]) -> None:
        for path in paths:
            for loc in find(event, path):
                token = jwe.JWE(
                    orjson.dumps(loc.container[loc.key]),  # type: ignore[index]
                    protected=protected,
                    recipient=public,
                )
                loc.container[loc.key] = token.serialize(compact=True)  # type: ignore[index]

    return transform


def rsa_per_field(paths: list[FieldPath], pem: bytes) -> Transform:
    public = serialization.load_pem_public_key(pem)
    assert isinstance(public, rsa.RSAPublicKey)

    def transform(event: dict[str, Any]) -> None:
        for path in paths:
            for loc in find(event, path):
                plain = orjson.dumps(loc.container[loc.key])  # type: ignore[index]
                blocks = [
                    public.encrypt(plain[i : i + 190], _OAEP) for i in range(0, len(plain), 190)
                ]
                loc.container[loc.key] = ".".join(base64.b64encode(b).decode() for b in blocks)  # type: ignore[index]

    return transform


def transform_for(mode: str, environ: dict[str, str]) -> Transform | None:
    if mode == "echo":
        return None
    paths = parse_selection(environ["BASELINE_FIELDS"].split(","))
    pem = Path(environ["BASELINE_PUBLIC_KEY"]).read_bytes()
    if mode == "jose":
        return jose_per_field(paths, pem, environ.get("BASELINE_KID", "baseline"))
    return rsa_per_field(paths, pem)


async def serve(mode: str, environ: dict[str, str]) -> None:
    settings = ServerSettings.from_env("encryptsvc", 50053, Env(environ))
    configure_logging(settings.log_level, settings.log_format)
    servicer = BaselineServicer(transform_for(mode, environ))

    def register(server: grpc.aio.Server) -> None:
        encrypt_pb2_grpc.add_EncryptServiceServicer_to_server(servicer, server)

    parts = ServerParts(
        name=f"baseline-{mode}", service_names=[SERVICE_NAME], register=register, rules=RULES
    )
    await run_until_signal(GrpcServer.from_settings(parts, settings))


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in MODES:
        raise SystemExit(f"usage: python -m benchmarks.baseline_server {{{','.join(MODES)}}}")
    asyncio.run(serve(sys.argv[1], dict(os.environ)))


if __name__ == "__main__":
    main()
