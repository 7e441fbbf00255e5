"""How the services' enums read on screen, and why a destination type cannot be encrypted."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from phiseal.audit.v1 import audit_pb2
from phiseal.common.v1 import common_pb2
from phiseal.keys.v1 import keys_pb2
from phiseal.policy.v1 import policy_pb2

CLOUD_MODE = policy_pb2.DESTINATION_TYPE_EVENT_STREAM_CLOUD_MODE

DESTINATION_TYPES = {
    policy_pb2.DESTINATION_TYPE_EVENT_STREAM_CLOUD_MODE: "Event stream, cloud mode",
    policy_pb2.DESTINATION_TYPE_EVENT_STREAM_DEVICE_MODE: "Event stream, device mode",
    policy_pb2.DESTINATION_TYPE_WAREHOUSE: "Warehouse",
    policy_pb2.DESTINATION_TYPE_STORAGE: "Storage",
    policy_pb2.DESTINATION_TYPE_REVERSE_ETL: "Reverse ETL",
}

# Why only cloud-mode event-stream destinations offer encryption.
WHY_NO_ENCRYPTION = {
    policy_pb2.DESTINATION_TYPE_EVENT_STREAM_DEVICE_MODE: (
        "Device-mode destinations receive events straight from the end user's browser or app; "
        "the events never pass through PHIseal, so there is nowhere to encrypt them."
    ),
    policy_pb2.DESTINATION_TYPE_WAREHOUSE: (
        "Warehouses are loaded in bulk by their own sync, not from the event stream that "
        "PHIseal encrypts; keep PHI out of warehouse syncs instead."
    ),
    policy_pb2.DESTINATION_TYPE_STORAGE: (
        "Storage destinations receive files written in bulk, not the event stream that "
        "PHIseal encrypts."
    ),
    policy_pb2.DESTINATION_TYPE_REVERSE_ETL: (
        "Reverse ETL sends rows from a warehouse to a tool; they never pass through the event "
        "stream that PHIseal encrypts."
    ),
}

CLASSES = {
    policy_pb2.CLASSIFICATION_RED: "red",
    policy_pb2.CLASSIFICATION_YELLOW: "yellow",
    policy_pb2.CLASSIFICATION_GREEN: "green",
}
CLASS_MEANING = {
    "red": "restricted: never selectable (it should not be collected at all)",
    "yellow": "sensitive: may be encrypted",
    "green": "not sensitive: no effect",
}

SOURCES = {
    policy_pb2.DECISION_SOURCE_DEFAULT_MATCHER: "default matcher",
    policy_pb2.DECISION_SOURCE_CUSTOM_MATCHER: "custom matcher",
    policy_pb2.DECISION_SOURCE_OVERRIDE: "override",
    policy_pb2.DECISION_SOURCE_NONE: "no matcher",
}

ALGORITHMS = {
    common_pb2.KEY_ALGORITHM_X25519: "X25519 (ECDH-ES+A256KW)",
    common_pb2.KEY_ALGORITHM_RSA_2048: "RSA 2048 (RSA-OAEP-256)",
    common_pb2.KEY_ALGORITHM_RSA_3072: "RSA 3072 (RSA-OAEP-256)",
    common_pb2.KEY_ALGORITHM_RSA_4096: "RSA 4096 (RSA-OAEP-256)",
}

FORMATS = {
    common_pb2.ENCRYPTION_FORMAT_JWE: "JWE (compact, RFC 7516)",
    common_pb2.ENCRYPTION_FORMAT_SEGMENT_RSA_OAEP: "Segment-compatible RSA-OAEP (RSA keys only)",
}

KEY_STATES = {
    keys_pb2.KEY_STATE_PENDING: "pending",
    keys_pb2.KEY_STATE_ACTIVE: "active",
    keys_pb2.KEY_STATE_RETIRED: "retired",
    keys_pb2.KEY_STATE_EXPIRED: "expired",
}
KEY_ORIGINS = {
    keys_pb2.KEY_ORIGIN_GENERATED: "generated",
    keys_pb2.KEY_ORIGIN_IMPORTED: "imported",
}

OUTCOMES = {
    audit_pb2.OUTCOME_SUCCEEDED: "succeeded",
    audit_pb2.OUTCOME_FAILED: "failed",
    audit_pb2.OUTCOME_DENIED: "denied",
}


def when(ts: Timestamp) -> str:
    """A timestamp in UTC to the second; '' when unset."""
    if not ts.seconds and not ts.nanos:
        return ""
    moment = dt.datetime.fromtimestamp(ts.seconds, dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def label(table: Mapping[Any, str], value: int) -> str:
    return table.get(value, "unspecified")
