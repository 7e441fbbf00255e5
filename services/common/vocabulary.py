"""The domain words more than one service uses, defined once: format, change kind, no-key text."""

from __future__ import annotations

from enum import Enum, StrEnum


class EncryptionFormat(StrEnum):
    """How encryptsvc writes a named value. The values are policysvc's stored spelling."""

    JWE = "jwe"
    SEGMENT_RSA_OAEP = "segment_rsa_oaep"


class ChangeKind(Enum):
    """One message of a change feed or watch stream (see services/common/data/changefeed.py)."""

    CHANGED = "changed"  # one destination's key or policy changed: reload it
    RESYNC = "resync"  # changes may have been missed: reload everything
    HEARTBEAT = "heartbeat"  # every change committed before this message's time was delivered


def no_active_key(destination_id: str, *, pending: bool = False) -> str:
    """The one message for "this destination has no key to encrypt to", with its fix."""
    fix = (
        "a pending version waits for ConfirmKey"
        if pending
        else "generate one with GenerateKeyPair or import one with ImportPublicKey (keysvc)"
    )
    return f"destination {destination_id} has no active key: {fix}"
