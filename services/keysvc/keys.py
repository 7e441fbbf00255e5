"""The key domain: versions and their states, the rules of generation, rotation and confirmation."""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Protocol, TypeVar

import structlog

from services.common.audit import AuditEntry, JSONValue, Outcome
from services.common.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from services.common.security.auth import Caller, PrincipalKind, Role
from services.common.security.authz import AccessDenied, require, visible_workspaces
from services.common.vocabulary import no_active_key
from services.keysvc import crypto
from services.keysvc.crypto import Algorithm, Challenge, Kdf, PrivateKeyDelivery, PublicKey

log = structlog.get_logger("keysvc")

T = TypeVar("T")

MAX_DESTINATION_ID = 200
MAX_REQUEST_ID = 200
MAX_CHALLENGE_ANSWER = 1000
# The expiry sweep acts as this system caller (audit actor "service:keysvc-expiry-sweeper").
EXPIRY_SWEEPER = "keysvc-expiry-sweeper"


class KeyState(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    RETIRED = "retired"
    EXPIRED = "expired"


class KeyOrigin(StrEnum):
    GENERATED = "generated"
    IMPORTED = "imported"


class Activation(StrEnum):
    IMMEDIATE = "immediate"
    AFTER_CONFIRMATION = "after_confirmation"


def kid_for(destination_id: str, version: int) -> str:
    """The key id every ciphertext carries: "<destination_id>.v<version>"."""
    return f"{destination_id}.v{version}"


@dataclass(frozen=True)
class Destination:
    """What policysvc says about a destination: it exists, which workspace owns it, and why it
    may not have encryption keys (empty when it may)."""

    destination_id: str
    workspace_id: str
    encryption_problems: tuple[str, ...] = ()


def require_eligible(destination: Destination) -> None:
    """Keys, like policies, only for cloud-mode event-stream destinations of HIPAA-eligible
    workspaces: FAILED_PRECONDITION naming the fix otherwise."""
    if destination.encryption_problems:
        raise FailedPrecondition(
            f"no encryption key for destination {destination.destination_id}: "
            + "; ".join(destination.encryption_problems)
        )


@dataclass(frozen=True)
class KeyVersion:
    """One version of a destination's public key. Never holds private material."""

    destination_id: str
    workspace_id: str
    version: int
    algorithm: Algorithm
    state: KeyState
    origin: KeyOrigin
    public_key_pem: str
    public_key_jwk: str
    fingerprint_sha256: str
    created_at: datetime
    created_by: str
    activated_at: datetime | None = None
    retired_at: datetime | None = None
    confirm_by: datetime | None = None

    @property
    def kid(self) -> str:
        return kid_for(self.destination_id, self.version)

    def as_of(self, now: datetime) -> KeyVersion:
        """The state a reader sees: a pending key past its deadline is expired, swept or not."""
        if (
            self.state is KeyState.PENDING
            and self.confirm_by is not None
            and self.confirm_by <= now
        ):
            return replace(self, state=KeyState.EXPIRED)
        return self


@dataclass(frozen=True)
class StoredVersion:
    """A key version with the hashes the store keeps beside it (never the secrets themselves)."""

    key: KeyVersion
    request_hash: bytes | None = None
    challenge_hash: bytes | None = None


@dataclass(frozen=True)
class KeyChange:
    """One committed change, as broadcast to WatchKeys subscribers."""

    destination_id: str
    version: int
    state: KeyState

    def to_payload(self) -> str:
        return json.dumps(
            {"destination_id": self.destination_id, "version": self.version, "state": self.state}
        )

    @classmethod
    def from_payload(cls, payload: str) -> KeyChange | None:
        """None when the payload is not one of ours (a watcher then resyncs)."""
        try:
            data = json.loads(payload)
            return cls(str(data["destination_id"]), int(data["version"]), KeyState(data["state"]))
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class Created:
    """The outcome of an action that created a version."""

    key: KeyVersion
    private_key: PrivateKeyDelivery | None = None
    challenge: str = ""  # compact JWE, for AFTER_CONFIRMATION
    previous_version: int = 0


class DestinationDirectory(Protocol):
    """policysvc's view of destinations. Raises NotFound, or Unavailable when it cannot tell."""

    async def get(self, destination_id: str) -> Destination: ...


class KeyTransaction(Protocol):
    """One destination's keys inside one database transaction."""

    async def versions(self) -> list[StoredVersion]:
        """Every version, newest first."""
        ...

    async def insert(
        self, key: KeyVersion, request_hash: bytes | None, challenge_hash: bytes | None
    ) -> None:
        """Adds a version and announces it to watchers when the transaction commits."""
        ...

    async def set_state(self, version: int, state: KeyState, at: datetime) -> None:
        """Moves a version to ``state`` (stamping activated/retired at ``at``) and announces it."""
        ...

    async def audit(self, entry: AuditEntry) -> None:
        """Writes ``entry`` to the outbox in this transaction."""
        ...


class KeyStore(Protocol):
    def locked(self, destination_id: str) -> AbstractAsyncContextManager[KeyTransaction]:
        """A transaction holding the destination's lock: changes to one destination serialise."""
        ...

    def reading(self, destination_id: str) -> AbstractAsyncContextManager[KeyTransaction]:
        """A transaction without the lock, for reads (and their audit rows)."""
        ...

    async def expire_due(
        self, now: datetime, audit: Callable[[KeyVersion], AuditEntry]
    ) -> list[KeyVersion]:
        """Marks every pending version past its deadline expired; returns them (as expired)."""
        ...


def utc_now() -> datetime:
    return datetime.now(UTC)


class _Refusal(Exception):
    """Aborts a transaction with ``error``; ``audit`` is then recorded on its own."""

    def __init__(self, error: DomainError, audit: AuditEntry | None) -> None:
        super().__init__(error.message)
        self.error = error
        self.audit = audit


MAX_WATCH_FILTER = 1000


def check_destination_id(destination_id: str) -> str:
    value = destination_id.strip()
    if not value:
        raise InvalidArgument("destination_id is required")
    if len(value) > MAX_DESTINATION_ID or not value.isprintable():
        raise InvalidArgument(
            f"destination_id must be printable and at most {MAX_DESTINATION_ID} characters"
        )
    return value


def _request_hash(request_id: str) -> bytes | None:
    value = request_id.strip()
    if len(value) > MAX_REQUEST_ID:
        raise InvalidArgument(f"request_id must be at most {MAX_REQUEST_ID} characters")
    return crypto.hash_secret(value) if value else None


def _check_passphrase(passphrase: str, kdf: Kdf | None) -> Kdf:
    if not passphrase:
        if kdf not in (None, Kdf.NONE):
            raise InvalidArgument(
                "passphrase_kdf is set but passphrase is empty: give both or neither"
            )
        return Kdf.NONE
    crypto.check_passphrase(passphrase)
    return kdf if kdf not in (None, Kdf.NONE) else Kdf.SCRYPT


class KeyManager:
    """Every key action: validates, asks policysvc about the destination, writes with audit."""

    def __init__(
        self,
        store: KeyStore,
        directory: DestinationDirectory,
        *,
        pending_ttl: timedelta,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._store = store
        self._directory = directory
        self._pending_ttl = pending_ttl
        self._clock = clock

    async def generate(
        self,
        caller: Caller,
        destination_id: str,
        algorithm: Algorithm,
        *,
        passphrase: str = "",
        kdf: Kdf | None = None,
        request_id: str = "",
    ) -> Created:
        """Version 1 of a destination's key pair; the private key is returned once."""
        dest_id = check_destination_id(destination_id)
        kdf = _check_passphrase(passphrase, kdf)
        request_hash = _request_hash(request_id)
        destination = await self._directory.get(dest_id)
        require(caller.principal, destination.workspace_id, Role.ADMIN)
        require_eligible(destination)

        async def precheck(tx: KeyTransaction) -> None:
            self._may_generate(caller, await tx.versions(), destination, request_hash, algorithm)

        # Refuse before paying for an RSA key; the check is repeated under the lock below.
        await self._locked(dest_id, precheck)
        pair = await asyncio.to_thread(crypto.generate, algorithm)
        delivery = await asyncio.to_thread(pair.deliver, passphrase, kdf)

        async def create(tx: KeyTransaction) -> KeyVersion:
            self._may_generate(caller, await tx.versions(), destination, request_hash, algorithm)
            now = self._clock()
            key = self._new_version(caller, destination, 1, pair.public, KeyOrigin.GENERATED, now)
            key = replace(key, state=KeyState.ACTIVE, activated_at=now)
            await tx.insert(key, request_hash, None)
            await tx.audit(
                _entry(
                    caller,
                    "Destination Encryption Keys Generated",
                    key,
                    passphrase_kdf=delivery.kdf.value,
                )
            )
            return key

        key = await self._locked(dest_id, create)
        log.info("key_generated", destination_id=dest_id, version=key.version, algorithm=algorithm)
        return Created(key, delivery)

    async def regenerate(
        self,
        caller: Caller,
        destination_id: str,
        algorithm: Algorithm | None,
        activation: Activation,
        *,
        passphrase: str = "",
        kdf: Kdf | None = None,
        request_id: str = "",
    ) -> Created:
        """A new generated version, active at once or pending until confirmed."""
        dest_id = check_destination_id(destination_id)
        kdf = _check_passphrase(passphrase, kdf)
        request_hash = _request_hash(request_id)
        destination = await self._directory.get(dest_id)
        require(caller.principal, destination.workspace_id, Role.ADMIN)
        require_eligible(destination)
        event = "Destination Encryption Keys Regenerated"

        async def precheck(tx: KeyTransaction) -> Algorithm:
            versions = await tx.versions()
            self._may_rotate(caller, versions, destination, request_hash, event)
            current = _active(versions) or versions[0].key
            return algorithm or current.algorithm

        chosen = await self._locked(dest_id, precheck)
        pair = await asyncio.to_thread(crypto.generate, chosen)
        delivery = await asyncio.to_thread(pair.deliver, passphrase, kdf)

        async def rotate(tx: KeyTransaction) -> Created:
            versions = await tx.versions()
            self._may_rotate(caller, versions, destination, request_hash, event)
            created = await self._add_version(
                caller,
                tx,
                destination,
                versions,
                pair.public,
                KeyOrigin.GENERATED,
                activation,
                request_hash,
            )
            await tx.audit(
                _entry(
                    caller,
                    event,
                    created.key,
                    activation=activation.value,
                    previous_version=created.previous_version,
                    passphrase_kdf=delivery.kdf.value,
                )
            )
            return replace(created, private_key=delivery)

        created = await self._locked(dest_id, rotate)
        log.info(
            "key_regenerated",
            destination_id=dest_id,
            version=created.key.version,
            state=created.key.state,
        )
        return created

    async def import_key(
        self,
        caller: Caller,
        destination_id: str,
        public: PublicKey,
        activation: Activation,
        *,
        request_id: str = "",
    ) -> Created:
        """A customer's own public key as a new version; PHIseal never holds its private key."""
        dest_id = check_destination_id(destination_id)
        request_hash = _request_hash(request_id)
        destination = await self._directory.get(dest_id)
        require(caller.principal, destination.workspace_id, Role.ADMIN)
        require_eligible(destination)
        event = "Destination Public Key Imported"

        async def add(tx: KeyTransaction) -> Created:
            versions = await tx.versions()
            self._refuse_retry(caller, versions, destination, request_hash, event)
            for stored in versions:
                if stored.key.fingerprint_sha256 == public.fingerprint:
                    raise _Refusal(
                        AlreadyExists(
                            f"this public key is already version {stored.key.version} "
                            f"({stored.key.kid}) of destination {dest_id}"
                        ),
                        _failure(caller, event, destination, reason="duplicate public key"),
                    )
            created = await self._add_version(
                caller,
                tx,
                destination,
                versions,
                public,
                KeyOrigin.IMPORTED,
                activation,
                request_hash,
            )
            await tx.audit(
                _entry(
                    caller,
                    event,
                    created.key,
                    activation=activation.value,
                    previous_version=created.previous_version,
                )
            )
            return created

        created = await self._locked(dest_id, add)
        log.info("key_imported", destination_id=dest_id, version=created.key.version)
        return created

    async def confirm(
        self, caller: Caller, destination_id: str, version: int, answer: str
    ) -> KeyVersion:
        """Activates a pending version once the caller shows it decrypted the challenge."""
        dest_id = check_destination_id(destination_id)
        if version <= 0:
            raise InvalidArgument("version is required: the pending version to confirm")
        if not answer or len(answer) > MAX_CHALLENGE_ANSWER:
            raise InvalidArgument(
                "challenge_plaintext is required: decrypt the challenge JWE with the new "
                "private key and send its plaintext"
            )
        event = "Destination Encryption Key Confirmed"

        async def activate(tx: KeyTransaction) -> KeyVersion:
            versions = await tx.versions()
            stored = next((s for s in versions if s.key.version == version), None)
            if stored is None:
                raise NotFound(f"destination {dest_id} has no key version {version}")
            require(caller.principal, stored.key.workspace_id, Role.ADMIN)
            now = self._clock()
            key = stored.key.as_of(now)
            if key.state is not KeyState.PENDING:
                why = (
                    "it was not confirmed in time; call RegenerateKeyPair again"
                    if key.state is KeyState.EXPIRED
                    else "only a pending version can be confirmed"
                )
                raise _Refusal(
                    FailedPrecondition(f"key {key.kid} is {key.state}, not pending: {why}"),
                    _entry(
                        caller, event, key, outcome=Outcome.FAILED, reason=f"key is {key.state}"
                    ),
                )
            expected = stored.challenge_hash or b""
            if not hmac.compare_digest(crypto.hash_secret(answer), expected):
                raise _Refusal(
                    PermissionDenied(
                        f"the answer does not match the challenge of key {key.kid}: decrypt the "
                        "challenge JWE with this version's private key and send its plaintext; "
                        "the key stays pending"
                    ),
                    _entry(
                        caller, event, key, outcome=Outcome.DENIED, reason="wrong challenge answer"
                    ),
                )
            previous = _active(versions)
            if previous is not None:
                await tx.set_state(previous.version, KeyState.RETIRED, now)
            await tx.set_state(version, KeyState.ACTIVE, now)
            confirmed = replace(key, state=KeyState.ACTIVE, activated_at=now)
            await tx.audit(
                _entry(
                    caller, event, confirmed, previous_version=previous.version if previous else 0
                )
            )
            return confirmed

        key = await self._locked(dest_id, activate)
        log.info("key_confirmed", destination_id=dest_id, version=version)
        return key

    async def get(self, caller: Caller, destination_id: str, version: int = 0) -> KeyVersion:
        """The active version, or the named one; a person's read is audited before it is shown."""
        dest_id = check_destination_id(destination_id)
        async with self._store.reading(dest_id) as tx:
            now = self._clock()
            keys = [s.key.as_of(now) for s in await tx.versions()]
            if version:
                key = next((k for k in keys if k.version == version), None)
                if key is None:
                    raise NotFound(f"destination {dest_id} has no key version {version}")
            else:
                key = next((k for k in keys if k.state is KeyState.ACTIVE), None)
                if key is None:
                    pending = any(k.state is KeyState.PENDING for k in keys)
                    raise NotFound(no_active_key(dest_id, pending=pending))
            require(caller.principal, key.workspace_id, Role.VIEWER)
            if _is_person(caller):
                await tx.audit(_entry(caller, "Destination Public Key Viewed", key))
            return key

    async def authorize_watch(
        self, caller: Caller, destination_ids: Sequence[str]
    ) -> frozenset[str]:
        """WatchKeys' filter, checked: services and viewers of every workspace may watch
        everything; a person names the destinations, each in a workspace they may view."""
        if len(destination_ids) > MAX_WATCH_FILTER:
            raise InvalidArgument(f"at most {MAX_WATCH_FILTER} destination_ids per watch")
        wanted = frozenset(check_destination_id(d) for d in destination_ids)
        principal = caller.principal
        if visible_workspaces(principal, Role.VIEWER) is None:
            return wanted
        if not wanted:
            raise AccessDenied(
                "permission denied: watching every destination needs viewer in every "
                "workspace; name destination_ids in workspaces where you are a viewer",
                needed=Role.VIEWER,
            )
        for dest_id in sorted(wanted):
            destination = await self._directory.get(dest_id)
            require(principal, destination.workspace_id, Role.VIEWER)
        return wanted

    async def list_versions(self, caller: Caller, destination_id: str) -> list[KeyVersion]:
        """Every version, newest first, with no private material."""
        dest_id = check_destination_id(destination_id)
        async with self._store.reading(dest_id) as tx:
            now = self._clock()
            keys = [s.key.as_of(now) for s in await tx.versions()]
            if keys:
                require(caller.principal, keys[0].workspace_id, Role.VIEWER)
            if keys and _is_person(caller):
                await tx.audit(
                    AuditEntry.by(
                        caller,
                        event_type="Destination Encryption Keys Listed",
                        workspace_id=keys[0].workspace_id,
                        target=dest_id,
                        details={"destination_id": dest_id, "versions": len(keys)},
                    )
                )
            return keys

    async def expire_due(self, sweeper: Caller) -> list[KeyVersion]:
        """The sweep: pending versions past their deadline become expired (and are announced).

        Nobody asked for it: ``sweeper`` is PHIseal acting on its own
        (``Caller.system(EXPIRY_SWEEPER)``), the actor of the audit records."""

        def audit(key: KeyVersion) -> AuditEntry:
            return _entry(
                sweeper, "Destination Encryption Key Expired", key, reason="not confirmed in time"
            )

        expired = await self._store.expire_due(self._clock(), audit)
        for key in expired:
            log.info("key_expired", destination_id=key.destination_id, version=key.version)
        return expired

    # -- rules ---------------------------------------------------------------------------------

    async def _locked(
        self, destination_id: str, work: Callable[[KeyTransaction], Awaitable[T]]
    ) -> T:
        try:
            async with self._store.locked(destination_id) as tx:
                return await work(tx)
        except _Refusal as refusal:
            # The transaction rolled back; the refused attempt is still recorded, on its own.
            if refusal.audit is not None:
                async with self._store.reading(destination_id) as tx:
                    await tx.audit(refusal.audit)
            raise refusal.error from None

    def _refuse_retry(
        self,
        caller: Caller,
        versions: Sequence[StoredVersion],
        destination: Destination,
        request_hash: bytes | None,
        event: str,
    ) -> None:
        if request_hash is None:
            return
        for stored in versions:
            if stored.request_hash is not None and hmac.compare_digest(
                stored.request_hash, request_hash
            ):
                private = (
                    "its private key was delivered in that response and cannot be shown again"
                    if stored.key.origin is KeyOrigin.GENERATED
                    else "nothing was changed"
                )
                raise _Refusal(
                    AlreadyExists(
                        f"this request id already created key {stored.key.kid}: {private}; "
                        "if that response was lost, call RegenerateKeyPair with a new request id"
                    ),
                    _failure(
                        caller, event, destination, reason="retried request id", kid=stored.key.kid
                    ),
                )

    def _may_generate(
        self,
        caller: Caller,
        versions: Sequence[StoredVersion],
        destination: Destination,
        request_hash: bytes | None,
        algorithm: Algorithm,
    ) -> None:
        event = "Destination Encryption Keys Generated"
        self._refuse_retry(caller, versions, destination, request_hash, event)
        if versions:
            newest = versions[0].key
            raise _Refusal(
                FailedPrecondition(
                    f"destination {destination.destination_id} already has keys (newest "
                    f"{newest.kid}); use RegenerateKeyPair to make a new version"
                ),
                _failure(
                    caller, event, destination, reason="keys exist", algorithm=algorithm.value
                ),
            )

    def _may_rotate(
        self,
        caller: Caller,
        versions: Sequence[StoredVersion],
        destination: Destination,
        request_hash: bytes | None,
        event: str,
    ) -> None:
        self._refuse_retry(caller, versions, destination, request_hash, event)
        if not versions:
            raise _Refusal(
                FailedPrecondition(
                    f"destination {destination.destination_id} has no keys yet: "
                    "use GenerateKeyPair (or ImportPublicKey) first"
                ),
                _failure(caller, event, destination, reason="no keys"),
            )

    def _new_version(
        self,
        caller: Caller,
        destination: Destination,
        version: int,
        public: PublicKey,
        origin: KeyOrigin,
        now: datetime,
    ) -> KeyVersion:
        return KeyVersion(
            destination_id=destination.destination_id,
            workspace_id=destination.workspace_id,
            version=version,
            algorithm=public.algorithm,
            state=KeyState.PENDING,
            origin=origin,
            public_key_pem=public.pem,
            public_key_jwk=public.jwk(kid_for(destination.destination_id, version)),
            fingerprint_sha256=public.fingerprint,
            created_at=now,
            created_by=caller.actor_id,
        )

    async def _add_version(
        self,
        caller: Caller,
        tx: KeyTransaction,
        destination: Destination,
        versions: Sequence[StoredVersion],
        public: PublicKey,
        origin: KeyOrigin,
        activation: Activation,
        request_hash: bytes | None,
    ) -> Created:
        now = self._clock()
        number = max((s.key.version for s in versions), default=0) + 1
        key = self._new_version(caller, destination, number, public, origin, now)
        active = _active(versions)
        # A newer rotation supersedes one still waiting for confirmation.
        for stored in versions:
            if stored.key.state is KeyState.PENDING:
                await tx.set_state(stored.key.version, KeyState.EXPIRED, now)
                await tx.audit(
                    _entry(
                        caller,
                        "Destination Encryption Key Expired",
                        replace(stored.key, state=KeyState.EXPIRED),
                        reason=f"superseded by version {number}",
                    )
                )
        challenge: Challenge | None = None
        if activation is Activation.IMMEDIATE:
            if active is not None:
                await tx.set_state(active.version, KeyState.RETIRED, now)
            key = replace(key, state=KeyState.ACTIVE, activated_at=now)
        else:
            challenge = crypto.make_challenge(public, key.kid)
            key = replace(key, confirm_by=now + self._pending_ttl)
        await tx.insert(key, request_hash, challenge.answer_hash if challenge else None)
        return Created(
            key,
            challenge=challenge.jwe if challenge else "",
            previous_version=active.version if active else 0,
        )


def _active(versions: Sequence[StoredVersion]) -> KeyVersion | None:
    return next((s.key for s in versions if s.key.state is KeyState.ACTIVE), None)


def _is_person(caller: Caller) -> bool:
    return caller.principal.kind is PrincipalKind.PERSON


def _entry(
    caller: Caller,
    event_type: str,
    key: KeyVersion,
    outcome: Outcome = Outcome.SUCCEEDED,
    **details: JSONValue,
) -> AuditEntry:
    return AuditEntry.by(
        caller,
        event_type=event_type,
        workspace_id=key.workspace_id,
        target=key.destination_id,
        outcome=outcome,
        details={
            "destination_id": key.destination_id,
            "kid": key.kid,
            "version": key.version,
            "algorithm": key.algorithm.value,
            "origin": key.origin.value,
            "state": key.state.value,
            "fingerprint_sha256": key.fingerprint_sha256,
            **details,
        },
    )


def _failure(
    caller: Caller, event_type: str, destination: Destination, **details: JSONValue
) -> AuditEntry:
    return AuditEntry.by(
        caller,
        event_type=event_type,
        workspace_id=destination.workspace_id,
        target=destination.destination_id,
        outcome=Outcome.FAILED,
        details={"destination_id": destination.destination_id, **details},
    )
