"""Conversions between policysvc's domain values and its proto messages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from phiseal.policy.v1 import policy_pb2

from services.common.errors import InvalidArgument
from services.policysvc.catalog import Destination, DestinationType, Workspace

_DESTINATION_TYPES: dict[int, DestinationType] = {
    policy_pb2.DESTINATION_TYPE_EVENT_STREAM_CLOUD_MODE: DestinationType.EVENT_STREAM_CLOUD_MODE,
    policy_pb2.DESTINATION_TYPE_EVENT_STREAM_DEVICE_MODE: DestinationType.EVENT_STREAM_DEVICE_MODE,
    policy_pb2.DESTINATION_TYPE_WAREHOUSE: DestinationType.WAREHOUSE,
    policy_pb2.DESTINATION_TYPE_STORAGE: DestinationType.STORAGE,
    policy_pb2.DESTINATION_TYPE_REVERSE_ETL: DestinationType.REVERSE_ETL,
}
_DESTINATION_TYPE_PROTOS: dict[DestinationType, Any] = {v: k for k, v in _DESTINATION_TYPES.items()}


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def destination_type(value: int) -> DestinationType:
    """The domain type for a request's enum; unset or unknown values are refused."""
    found = _DESTINATION_TYPES.get(int(value))
    if found is None:
        known = ", ".join(
            policy_pb2.DestinationType.Name(k) for k in _DESTINATION_TYPE_PROTOS.values()
        )
        raise InvalidArgument(f"type is required and must be one of {known}")
    return found


def workspace_message(workspace: Workspace) -> policy_pb2.Workspace:
    return policy_pb2.Workspace(
        workspace_id=workspace.workspace_id,
        name=workspace.name,
        hipaa=policy_pb2.HipaaEligibility(
            eligible=workspace.hipaa.eligible,
            baa_reference=workspace.hipaa.baa_reference,
            set_by=workspace.hipaa.set_by,
            set_at=timestamp(workspace.hipaa.set_at),
        ),
        created_at=timestamp(workspace.created_at),
        created_by=workspace.created_by,
    )


def destination_message(destination: Destination) -> policy_pb2.Destination:
    return policy_pb2.Destination(
        destination_id=destination.destination_id,
        workspace_id=destination.workspace_id,
        name=destination.name,
        type=_DESTINATION_TYPE_PROTOS[destination.type],
        created_at=timestamp(destination.created_at),
        created_by=destination.created_by,
    )
