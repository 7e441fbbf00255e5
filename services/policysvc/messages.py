"""Conversions between policysvc's domain values and its proto messages."""

from __future__ import annotations

from typing import Any

from phiseal.policy.v1 import policy_pb2

from services.common.errors import InvalidArgument
from services.common.server.protoconv import format_from_proto, format_to_proto, to_timestamp
from services.common.vocabulary import EncryptionFormat
from services.policysvc.catalog import Destination, DestinationType, Workspace
from services.policysvc.classification import (
    Classification,
    DecisionSource,
    FieldClassification,
    Matcher,
    MatcherTarget,
    MatchKind,
)
from services.policysvc.picker import Picker
from services.policysvc.policy import Policy, Preview

_DESTINATION_TYPES: dict[int, DestinationType] = {
    policy_pb2.DESTINATION_TYPE_EVENT_STREAM_CLOUD_MODE: DestinationType.EVENT_STREAM_CLOUD_MODE,
    policy_pb2.DESTINATION_TYPE_EVENT_STREAM_DEVICE_MODE: DestinationType.EVENT_STREAM_DEVICE_MODE,
    policy_pb2.DESTINATION_TYPE_WAREHOUSE: DestinationType.WAREHOUSE,
    policy_pb2.DESTINATION_TYPE_STORAGE: DestinationType.STORAGE,
    policy_pb2.DESTINATION_TYPE_REVERSE_ETL: DestinationType.REVERSE_ETL,
}
_DESTINATION_TYPE_PROTOS: dict[DestinationType, Any] = {v: k for k, v in _DESTINATION_TYPES.items()}


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
            set_at=to_timestamp(workspace.hipaa.set_at),
        ),
        created_at=to_timestamp(workspace.created_at),
        created_by=workspace.created_by,
    )


def destination_message(destination: Destination) -> policy_pb2.Destination:
    return policy_pb2.Destination(
        destination_id=destination.destination_id,
        workspace_id=destination.workspace_id,
        name=destination.name,
        type=_DESTINATION_TYPE_PROTOS[destination.type],
        created_at=to_timestamp(destination.created_at),
        created_by=destination.created_by,
    )


_CLASSIFICATIONS: dict[int, Classification] = {
    policy_pb2.CLASSIFICATION_RED: Classification.RED,
    policy_pb2.CLASSIFICATION_YELLOW: Classification.YELLOW,
    policy_pb2.CLASSIFICATION_GREEN: Classification.GREEN,
}
_CLASSIFICATION_PROTOS: dict[Classification, Any] = {v: k for k, v in _CLASSIFICATIONS.items()}

_TARGETS: dict[int, MatcherTarget] = {
    policy_pb2.MATCHER_TARGET_KEY: MatcherTarget.KEY,
    policy_pb2.MATCHER_TARGET_VALUE: MatcherTarget.VALUE,
}
_TARGET_PROTOS: dict[MatcherTarget, Any] = {v: k for k, v in _TARGETS.items()}

_KINDS: dict[int, MatchKind] = {
    policy_pb2.MATCH_KIND_EXACT: MatchKind.EXACT,
    policy_pb2.MATCH_KIND_REGEX: MatchKind.REGEX,
    policy_pb2.MATCH_KIND_BUILTIN: MatchKind.BUILTIN,
}
_KIND_PROTOS: dict[MatchKind, Any] = {v: k for k, v in _KINDS.items()}

_SOURCE_PROTOS: dict[DecisionSource, Any] = {
    DecisionSource.DEFAULT_MATCHER: policy_pb2.DECISION_SOURCE_DEFAULT_MATCHER,
    DecisionSource.CUSTOM_MATCHER: policy_pb2.DECISION_SOURCE_CUSTOM_MATCHER,
    DecisionSource.OVERRIDE: policy_pb2.DECISION_SOURCE_OVERRIDE,
    DecisionSource.NONE: policy_pb2.DECISION_SOURCE_NONE,
}


def classification(value: int) -> Classification | None:
    """None for CLASSIFICATION_UNSPECIFIED; unknown numbers are refused."""
    if value == policy_pb2.CLASSIFICATION_UNSPECIFIED:
        return None
    found = _CLASSIFICATIONS.get(int(value))
    if found is None:
        raise InvalidArgument("classification must be CLASSIFICATION_RED, _YELLOW or _GREEN")
    return found


def encryption_format(value: int) -> EncryptionFormat:
    found = format_from_proto(value)
    if found is None:
        raise InvalidArgument(
            "format must be ENCRYPTION_FORMAT_JWE (the default) or "
            "ENCRYPTION_FORMAT_SEGMENT_RSA_OAEP"
        )
    return found


def matcher_target(value: int) -> MatcherTarget | None:
    return _TARGETS.get(int(value))


def match_kind(value: int) -> MatchKind | None:
    return _KINDS.get(int(value))


def matcher_message(matcher: Matcher) -> policy_pb2.Matcher:
    return policy_pb2.Matcher(
        matcher_id=matcher.matcher_id,
        name=matcher.name,
        target=_TARGET_PROTOS[matcher.target],
        kind=_KIND_PROTOS[matcher.kind],
        pattern=matcher.pattern,
        classification=_CLASSIFICATION_PROTOS[matcher.classification],
        is_default=matcher.is_default,
    )


def field_message(field: FieldClassification) -> policy_pb2.FieldClassification:
    return policy_pb2.FieldClassification(
        path=field.path,
        classification=_CLASSIFICATION_PROTOS[field.classification],
        source=_SOURCE_PROTOS[field.source],
        matcher_id=field.matcher_id,
        decided_by=field.decided_by,
        decided_on=(
            _TARGET_PROTOS[field.decided_on]
            if field.decided_on
            else policy_pb2.MATCHER_TARGET_UNSPECIFIED
        ),
    )


def policy_message(policy: Policy) -> policy_pb2.EncryptionPolicy:
    return policy_pb2.EncryptionPolicy(
        destination_id=policy.destination_id,
        workspace_id=policy.workspace_id,
        version=policy.version,
        enabled=policy.enabled,
        format=format_to_proto(policy.format),
        fields=list(policy.fields),
        created_at=to_timestamp(policy.created_at),
        created_by=policy.created_by,
        change_summary=policy.change_summary,
    )


def preview_message(preview: Preview) -> policy_pb2.PreviewEncryptionResponse:
    return policy_pb2.PreviewEncryptionResponse(
        policy_version=preview.policy_version,
        previews=[
            policy_pb2.EventPreview(
                index=p.index,
                encrypted_paths=p.encrypted_paths,
                missing_paths=p.missing_paths,
                error=p.error,
            )
            for p in preview.previews
        ],
        problems=preview.problems,
    )


def picker_message(picker: Picker) -> policy_pb2.ListSelectableFieldsResponse:
    return policy_pb2.ListSelectableFieldsResponse(
        selectable=[
            policy_pb2.SelectableField(field=field_message(c.field), encrypted=c.encrypted)
            for c in picker.selectable
        ],
        not_selectable=[
            policy_pb2.UnselectableField(
                field=field_message(c.field), how_to_change=c.how_to_change
            )
            for c in picker.not_selectable
        ],
        destination_problems=picker.destination_problems,
        next_page_token=picker.next_page_token,
    )
