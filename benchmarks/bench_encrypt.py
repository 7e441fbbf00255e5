"""EncryptEvents throughput and latency beside three baselines served the same way, and the kit.

Every contender is an EncryptService served by ``GrpcServer`` (same interceptor, options and
loopback channel) and fed the same request bytes:
  encryptsvc        the real service (one data key per batch, AES-GCM per field), with
                    RSA-2048, X25519 and hybrid ML-KEM-768 + X25519 (HPKE-9-KE) keys
  echo              returns the events untouched: the transport floor
  jose-per-field    jwcrypto, one JWE with a fresh content key (one RSA-OAEP-256 op) per field
  rsa-per-field     raw RSA-OAEP-SHA256 per field (Segment's format)
encryptsvc follows a real policysvc and keysvc (on a private PostgreSQL), configured through
their APIs as a customer would; its cache is warm, as in production, so they are off the hot
path except for their watch streams' heartbeats. Every service runs with PHISEAL_INSECURE=true
(plaintext loopback) so that encryptsvc and the baselines pay the same transport cost.
"""

from __future__ import annotations

import base64
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import orjson
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from jwcrypto import jwe, jwk
from phiseal.encrypt.v1 import encrypt_pb2, encrypt_pb2_grpc

from phiseal_decrypt import Decryptor, Keyring
from phiseal_dev.testing import PgCluster, RunningService, start_service
from services.common.fieldpath import find, parse_selection
from services.common.security.auth import DevelopmentAuthenticator
from services.common.server.grpc_server import GrpcServer, ServerParts
from services.common.server.logging import configure_logging
from services.encryptsvc.app import SERVICE_NAME
from tests.encryptsvc.keys import KeyPair
from tests.encryptsvc.stack import FIELDS, HYBRID, SAMPLES, X25519, Admin, wait_serving

BATCH_SIZES = (1, 100, 1000)
SECONDS_PER_CELL = 2.0
MIN_CALLS = 3
_OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
PATHS = parse_selection(FIELDS)

Transform = Callable[[dict[str, Any], str], None]


class BaselineServicer(encrypt_pb2_grpc.EncryptServiceServicer):
    """Parses each event, applies ``transform`` to it (or echoes when None)."""

    def __init__(self, transform: Transform | None) -> None:
        self._transform = transform

    async def EncryptEvents(
        self,
        request: encrypt_pb2.EncryptEventsRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> encrypt_pb2.EncryptEventsResponse:
        if self._transform is None:
            results = [encrypt_pb2.EventResult(event=e) for e in request.events]
        else:
            results = []
            for raw in request.events:
                event = orjson.loads(raw)
                self._transform(event, str(event.get("messageId", "")))
                results.append(encrypt_pb2.EventResult(event=orjson.dumps(event)))
        return encrypt_pb2.EncryptEventsResponse(results=results)


def jose_per_field(public: jwk.JWK, kid: str) -> Transform:
    def transform(event: dict[str, Any], message_id: str) -> None:
        for path in PATHS:
            for loc in find(event, path):
                header = {"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": kid}
                token = jwe.JWE(
                    orjson.dumps(loc.container[loc.key]),  # type: ignore[index]
                    protected=orjson.dumps(header).decode(),
                    recipient=public,
                )
                loc.container[loc.key] = token.serialize(compact=True)  # type: ignore[index]

    return transform


def rsa_per_field(public: rsa.RSAPublicKey) -> Transform:
    def transform(event: dict[str, Any], message_id: str) -> None:
        for path in PATHS:
            for loc in find(event, path):
                plain = orjson.dumps(loc.container[loc.key])  # type: ignore[index]
                # One RSA block per 190 bytes: what a long value costs this way.
                blocks = [
                    public.encrypt(plain[i : i + 190], _OAEP) for i in range(0, len(plain), 190)
                ]
                loc.container[loc.key] = ".".join(base64.b64encode(b).decode() for b in blocks)  # type: ignore[index]

    return transform


async def serve_baseline(transform: Transform | None) -> GrpcServer:
    servicer = BaselineServicer(transform)

    def register(server: grpc.aio.Server) -> None:
        encrypt_pb2_grpc.add_EncryptServiceServicer_to_server(servicer, server)

    parts = ServerParts(
        name="baseline",
        service_names=[SERVICE_NAME],
        register=register,
        authenticator=DevelopmentAuthenticator(),
    )
    server = GrpcServer(parts, host="127.0.0.1", port=0, grace=1, check_interval=1)
    await server.start()
    return server


def batch(size: int) -> list[bytes]:
    return [
        orjson.dumps({**SAMPLES[i % len(SAMPLES)], "messageId": f"bench-{i}"}) for i in range(size)
    ]


async def measure(
    address: str, destination: str, size: int
) -> tuple[float, float, float, float, list[bytes]]:
    """events/s, fields/s, p50 ms, p99 ms (and one response's events) for one cell."""
    async with grpc.aio.insecure_channel(
        address, options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    ) as channel:
        stub = encrypt_pb2_grpc.EncryptServiceStub(channel)
        request = encrypt_pb2.EncryptEventsRequest(destination_id=destination, events=batch(size))
        response = await stub.EncryptEvents(request)  # warm-up: caches, connection
        fields_per_call = sum(
            len(list(find(orjson.loads(r.event), p))) for r in response.results for p in PATHS
        )
        latencies: list[float] = []
        started = time.perf_counter()
        while len(latencies) < MIN_CALLS or time.perf_counter() - started < SECONDS_PER_CELL:
            t0 = time.perf_counter()
            await stub.EncryptEvents(request)
            latencies.append(time.perf_counter() - t0)
        elapsed = sum(latencies)
    calls = len(latencies)
    ordered = sorted(latencies)
    p99 = ordered[min(calls - 1, int(calls * 0.99))]
    return (
        calls * size / elapsed,
        calls * fields_per_call / elapsed,
        statistics.median(latencies) * 1000,
        p99 * 1000,
        [r.event for r in response.results],
    )


def kit_rate(events: list[bytes], ring: Keyring, cache_size: int) -> tuple[float, int]:
    decryptor = Decryptor(ring, cache_size=cache_size)
    parsed = [orjson.loads(e) for e in events]
    started = time.perf_counter()
    for event in parsed:
        decryptor.decrypt_event(event)
    elapsed = time.perf_counter() - started
    fields = sum(len(list(find(e, p))) for e in parsed for p in PATHS)
    return fields / elapsed, decryptor.unwraps


# Same transport for every contender (the baselines serve plaintext loopback).
INSECURE = {"PHISEAL_INSECURE": "true"}


def field_sizes(events: list[bytes]) -> tuple[float, float]:
    """Mean characters per sealed field and mean bytes per encrypted event."""
    parsed = [orjson.loads(e) for e in events]
    lengths = [len(loc.container[loc.key]) for e in parsed for p in PATHS for loc in find(e, p)]  # type: ignore[index]
    return statistics.mean(lengths), statistics.mean(len(e) for e in events)


async def control_plane(
    url: str,
) -> tuple[list[RunningService], dict[str, str], dict[str, KeyPair]]:
    """auditsvc, policysvc and keysvc, with an RSA-2048, an X25519 and a hybrid ML-KEM-768 +
    X25519 destination encrypting FIELDS, and the RSA and hybrid pairs."""
    audit = await start_service(
        "auditsvc",
        url,
        {
            **INSECURE,
            "AUDITSVC_SIGNING_KEY_FILE": str(Path(tempfile.mkdtemp()) / "signing.pem"),
        },
    )
    env = {**INSECURE, "LOG_LEVEL": "warning", "AUDITSVC_ADDR": audit.peer_address}
    policy = await start_service("policysvc", url, env)
    keys = await start_service("keysvc", url, {**env, "POLICYSVC_ADDR": policy.peer_address})
    admin = Admin(policy.channel(), keys.channel())
    workspace_id = await admin.workspace()
    await admin.make_yellow(workspace_id, FIELDS)
    rsa_dest, key = await admin.encrypting_destination(workspace_id, name="RSA webhook")
    x_dest, _ = await admin.encrypting_destination(
        workspace_id, algorithm=X25519, name="X25519 webhook"
    )
    pq_dest, pq_key = await admin.encrypting_destination(
        workspace_id, algorithm=HYBRID, name="Hybrid webhook"
    )
    destinations = {"rsa": rsa_dest, "x25519": x_dest, "hybrid": pq_dest}
    return [keys, policy, audit], destinations, {"rsa": key, "hybrid": pq_key}


async def main() -> None:
    configure_logging("warning", "json")
    cluster = PgCluster.start()
    try:
        await cluster.build_template()
        await run(await cluster.create_database())
    finally:
        cluster.stop()


async def run(url: str) -> None:
    peers, destinations, pairs = await control_plane(url)
    key = pairs["rsa"]
    service = await start_service(
        "encryptsvc",
        None,
        {
            **INSECURE,
            "POLICYSVC_ADDR": peers[1].peer_address,
            "KEYSVC_ADDR": peers[0].peer_address,
            "LOG_LEVEL": "warning",
        },
    )
    await wait_serving(service.channel())
    assert isinstance(key.private, rsa.RSAPrivateKey)
    public = key.private.public_key()
    baselines = {
        "echo (transport floor)": await serve_baseline(None),
        "jose-per-field (jwcrypto)": await serve_baseline(
            jose_per_field(jwk.JWK.from_pem(key.public_pem.encode()), key.kid)
        ),
        "rsa-per-field (raw OAEP)": await serve_baseline(rsa_per_field(public)),
    }
    rsa_dest = destinations["rsa"]
    contenders = [
        ("encryptsvc JWE RSA-2048", service.address, rsa_dest),
        ("encryptsvc JWE X25519", service.address, destinations["x25519"]),
        ("encryptsvc JWE ML-KEM+X25519", service.address, destinations["hybrid"]),
        *[(name, f"127.0.0.1:{srv.port}", rsa_dest) for name, srv in baselines.items()],
    ]
    sealed_1000: list[bytes] = []
    sealed_100: dict[str, list[bytes]] = {}
    try:
        print(f"{len(FIELDS)} policy paths; sample events cycled; RSA-2048 unless noted")
        header = f"{'contender':28} {'batch':>5} {'events/s':>10} {'fields/s':>10}"
        print(f"{header} {'p50 ms':>8} {'p99 ms':>8} {'vs encryptsvc':>13}")
        for size in BATCH_SIZES:
            reference = 0.0
            for name, address, destination in contenders:
                eps, fps, p50, p99, events = await measure(address, destination, size)
                if name.startswith("encryptsvc JWE RSA"):
                    reference = eps
                    if size == 1000:
                        sealed_1000 = events
                if size == 100 and name.startswith("encryptsvc"):
                    sealed_100[name] = events
                ratio = f"{eps / reference:.2f}x" if reference else "-"
                print(
                    f"{name:28} {size:>5} {eps:>10.0f} {fps:>10.0f} "
                    f"{p50:>8.2f} {p99:>8.2f} {ratio:>13}",
                    flush=True,
                )
        plain = statistics.mean(len(e) for e in batch(100))
        print(f"size per field and per event (batch of 100; plaintext event {plain:.0f} B):")
        base_field = 0.0
        for name, events in sealed_100.items():
            per_field, per_event = field_sizes(events)
            base_field = base_field or per_field
            print(
                f"  {name:28} {per_field:7.0f} chars/field ({per_field / base_field:4.1f}x) "
                f"{per_event:8.0f} B/event ({per_event / plain:4.1f}x plaintext)"
            )
        for label, pair, events in (
            ("RSA", key, sealed_1000),
            ("ML-KEM+X25519", pairs["hybrid"], sealed_100["encryptsvc JWE ML-KEM+X25519"]),
        ):
            ring = Keyring()
            ring.add(pair.private)
            cached, unwraps = kit_rate(events, ring, 4096)
            uncached, _ = kit_rate(events[:100], ring, 0)
            print(
                f"decryption kit, {label}: {cached:.0f} fields/s with the data-key cache "
                f"({unwraps} unwrap for {len(events)} events), {uncached:.0f} fields/s without "
                f"({cached / uncached:.0f}x)"
            )
    finally:
        for server in baselines.values():
            await server.stop()
        await service.stop()
        for peer in peers:
            await peer.stop()


if __name__ == "__main__":
    import asyncio

    asyncio.run(main())
