"""Domain words to and from their proto spelling: the transport side's only converters for them."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp
from phiseal.common.v1 import common_pb2

from services.common.vocabulary import ChangeKind, EncryptionFormat

_FORMATS: dict[int, EncryptionFormat] = {
    # Unset means the default format, JWE.
    common_pb2.ENCRYPTION_FORMAT_UNSPECIFIED: EncryptionFormat.JWE,
    common_pb2.ENCRYPTION_FORMAT_JWE: EncryptionFormat.JWE,
    common_pb2.ENCRYPTION_FORMAT_SEGMENT_RSA_OAEP: EncryptionFormat.SEGMENT_RSA_OAEP,
}
_FORMAT_PROTOS: dict[EncryptionFormat, common_pb2.EncryptionFormat.ValueType] = {
    EncryptionFormat.JWE: common_pb2.ENCRYPTION_FORMAT_JWE,
    EncryptionFormat.SEGMENT_RSA_OAEP: common_pb2.ENCRYPTION_FORMAT_SEGMENT_RSA_OAEP,
}
_KINDS: dict[int, ChangeKind] = {
    common_pb2.CHANGE_KIND_CHANGED: ChangeKind.CHANGED,
    common_pb2.CHANGE_KIND_RESYNC: ChangeKind.RESYNC,
    common_pb2.CHANGE_KIND_HEARTBEAT: ChangeKind.HEARTBEAT,
}
_KIND_PROTOS: dict[ChangeKind, common_pb2.ChangeKind.ValueType] = {
    ChangeKind.CHANGED: common_pb2.CHANGE_KIND_CHANGED,
    ChangeKind.RESYNC: common_pb2.CHANGE_KIND_RESYNC,
    ChangeKind.HEARTBEAT: common_pb2.CHANGE_KIND_HEARTBEAT,
}


def format_from_proto(value: int) -> EncryptionFormat | None:
    """None for a number this build does not know (proto3 enums are open)."""
    return _FORMATS.get(int(value))


def format_to_proto(value: EncryptionFormat) -> common_pb2.EncryptionFormat.ValueType:
    return _FORMAT_PROTOS[value]


def change_kind_from_proto(value: int) -> ChangeKind:
    # An unknown kind may mean anything: read it as "changes may have been missed".
    return _KINDS.get(int(value), ChangeKind.RESYNC)


def change_kind_to_proto(value: ChangeKind) -> common_pb2.ChangeKind.ValueType:
    return _KIND_PROTOS[value]


def to_timestamp(value: datetime | None) -> Timestamp | None:
    """A proto Timestamp, or None (the field stays unset) for None."""
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def from_timestamp(value: Timestamp) -> datetime:
    """An aware UTC datetime."""
    return value.ToDatetime(tzinfo=UTC)


def epoch_seconds(value: Timestamp) -> float:
    return value.ToNanoseconds() / 1e9
