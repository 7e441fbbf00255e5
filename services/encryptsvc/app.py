"""encryptsvc composition root: settings → peer clients → caches → encryptor → servicer → server."""

from __future__ import annotations

import structlog
from phiseal.encrypt.v1 import encrypt_pb2
from prometheus_client import Counter

from services.common.selection import WALKING
from services.common.server.clients import open_peer_channel
from services.common.server.grpc_server import GrpcServer, ServerParts
from services.common.server.lifecycle import Closing
from services.common.server.metrics import Metrics
from services.encryptsvc.cache import Cache, DestinationCache, Lookups
from services.encryptsvc.config import Settings
from services.encryptsvc.encryption import EncryptCounts, Encryptor, Policy
from services.encryptsvc.envelope import SEALING, RecipientKey
from services.encryptsvc.peers import KeyClient, PolicyClient
from services.encryptsvc.rules import RULES
from services.encryptsvc.servicer import EncryptServicer

SERVICE_NAME = encrypt_pb2.DESCRIPTOR.services_by_name["EncryptService"].full_name


def cache_lookups(counter: Counter, cache: str) -> Lookups:
    """``phiseal_encrypt_cache_lookups_total{cache, result}`` for one cache."""
    return Lookups(*(counter.labels(cache, r) for r in ("hit", "miss", "expired", "refused")))


def encrypt_counts(metrics: Metrics) -> EncryptCounts:
    def counter(name: str, documentation: str) -> Counter:
        return metrics.counter(f"phiseal_encrypt_{name}", documentation)

    return EncryptCounts(
        events=counter("events", "Events encrypted under a policy that encrypts"),
        failed_events=counter("failed_events", "Events answered with a per-event error"),
        fields=counter("fields_encrypted", "Field values sealed"),
        data_keys=counter("data_keys", "Content keys made and wrapped (public-key operations)"),
        data_key_uses=counter("data_key_uses", "Field values sealed under a content key"),
    )


async def build(settings: Settings) -> GrpcServer:
    """Wires encryptsvc; the returned server is not started yet. It owns no database."""
    # "native" unless the C sealer could not be built here (then ~2.6x the CPU per field).
    structlog.get_logger("encryptsvc").info("sealer", sealing=SEALING, walking=WALKING)
    security = settings.server.security
    policy_channel = open_peer_channel(
        settings.policysvc_addr, "encryptsvc", security, peer="policysvc"
    )
    key_channel = open_peer_channel(settings.keysvc_addr, "encryptsvc", security, peer="keysvc")
    policy_client = PolicyClient(policy_channel, settings.peer_timeout)
    key_client = KeyClient(key_channel, settings.peer_timeout)
    metrics = Metrics("encryptsvc")
    lookups = metrics.counter(
        "phiseal_encrypt_cache_lookups",
        "Policy and key cache lookups: hit, miss, expired (reloaded past the staleness bound), "
        "refused (UNAVAILABLE: nothing fresh could be had)",
        ("cache", "result"),
    )
    policies: Cache[Policy] = Cache(
        "policies",
        policy_client.load,
        policy_client.watch,
        max_staleness=settings.max_staleness,
        lookups=cache_lookups(lookups, "policies"),
    )
    keys: Cache[RecipientKey | None] = Cache(
        "keys",
        key_client.load,
        key_client.watch,
        max_staleness=settings.max_staleness,
        lookups=cache_lookups(lookups, "keys"),
    )
    encryptor = Encryptor(
        DestinationCache(policies, keys), settings.limits, encrypt_counts(metrics)
    )
    servicer = EncryptServicer(encryptor)

    async def watches_live() -> str | None:
        reasons = [r for r in (policies.health(), keys.health()) if r]
        return "; ".join(reasons) or None

    parts = ServerParts(
        name="encryptsvc",
        service_names=[SERVICE_NAME],
        register=servicer.register,
        rules=RULES,
        metrics=metrics,
        checks=[watches_live],
        components=[
            Closing("policysvc-channel", lambda: policy_channel.close(None)),
            Closing("keysvc-channel", lambda: key_channel.close(None)),
            policies,
            keys,
        ],
    )
    return GrpcServer.from_settings(parts, settings.server)
