"""policysvc transport: proto → domain → proto. No SQL, no domain try/except."""

from __future__ import annotations

from collections.abc import AsyncIterator
from operator import itemgetter

from phiseal.policy.v1 import policy_pb2, policy_pb2_grpc
from typing_extensions import override

from services.common.data.changefeed import ChangeFeed
from services.common.data.watch import watch_events
from services.common.errors import InvalidArgument
from services.common.security.auth import current_caller
from services.common.server.interceptor import Context
from services.policysvc.catalog import Catalog
from services.policysvc.messages import (
    classification,
    destination_message,
    destination_type,
    encryption_format,
    field_message,
    match_kind,
    matcher_message,
    matcher_target,
    picker_message,
    policy_message,
    preview_message,
    workspace_message,
)
from services.policysvc.picker import FieldPicker
from services.policysvc.policy import DISABLED_NOTICE, Policies, parse_change, validate_filter
from services.policysvc.privacy import Privacy


class PolicyServicer(policy_pb2_grpc.PolicyServiceServicer):
    """phiseal.policy.v1.PolicyService."""

    def __init__(
        self,
        catalog: Catalog,
        privacy: Privacy,
        policies: Policies,
        picker: FieldPicker,
        feed: ChangeFeed,
    ) -> None:
        self._catalog = catalog
        self._privacy = privacy
        self._policies = policies
        self._picker = picker
        self._feed = feed

    @override
    async def CreateWorkspace(
        self, request: policy_pb2.CreateWorkspaceRequest, context: Context
    ) -> policy_pb2.CreateWorkspaceResponse:
        workspace = await self._catalog.create_workspace(current_caller(), request.name)
        return policy_pb2.CreateWorkspaceResponse(workspace=workspace_message(workspace))

    @override
    async def GetWorkspace(
        self, request: policy_pb2.GetWorkspaceRequest, context: Context
    ) -> policy_pb2.GetWorkspaceResponse:
        workspace = await self._catalog.get_workspace(current_caller(), request.workspace_id)
        return policy_pb2.GetWorkspaceResponse(workspace=workspace_message(workspace))

    @override
    async def SetHipaaEligibility(
        self, request: policy_pb2.SetHipaaEligibilityRequest, context: Context
    ) -> policy_pb2.SetHipaaEligibilityResponse:
        workspace = await self._catalog.set_hipaa_eligibility(
            current_caller(), request.workspace_id, request.eligible, request.baa_reference
        )
        return policy_pb2.SetHipaaEligibilityResponse(workspace=workspace_message(workspace))

    @override
    async def CreateDestination(
        self, request: policy_pb2.CreateDestinationRequest, context: Context
    ) -> policy_pb2.CreateDestinationResponse:
        destination = await self._catalog.create_destination(
            current_caller(), request.workspace_id, request.name, destination_type(request.type)
        )
        return policy_pb2.CreateDestinationResponse(destination=destination_message(destination))

    @override
    async def GetDestination(
        self, request: policy_pb2.GetDestinationRequest, context: Context
    ) -> policy_pb2.GetDestinationResponse:
        destination, problems = await self._catalog.destination_status(
            current_caller(), request.destination_id
        )
        return policy_pb2.GetDestinationResponse(
            destination=destination_message(destination),
            encryption_allowed=not problems,
            encryption_problems=problems,
        )

    @override
    async def ListDestinations(
        self, request: policy_pb2.ListDestinationsRequest, context: Context
    ) -> policy_pb2.ListDestinationsResponse:
        page = await self._catalog.list_destinations(
            current_caller(), request.workspace_id, request.page.page_size, request.page.page_token
        )
        return policy_pb2.ListDestinationsResponse(
            destinations=[destination_message(d) for d in page.destinations],
            next_page_token=page.next_page_token,
        )

    @override
    async def ListClassifications(
        self, request: policy_pb2.ListClassificationsRequest, context: Context
    ) -> policy_pb2.ListClassificationsResponse:
        page = await self._privacy.list_classifications(
            current_caller(),
            request.workspace_id,
            list(request.paths),
            list(request.sample_events),
            request.page.page_size,
            request.page.page_token,
        )
        return policy_pb2.ListClassificationsResponse(
            fields=[field_message(f) for f in page.fields],
            matchers=[matcher_message(m) for m in page.matchers],
            next_page_token=page.next_page_token,
        )

    @override
    async def SetClassification(
        self, request: policy_pb2.SetClassificationRequest, context: Context
    ) -> policy_pb2.SetClassificationResponse:
        caller = current_caller()
        change = request.WhichOneof("change")
        if change == "override":
            field = await self._privacy.set_override(
                caller,
                request.workspace_id,
                request.override.path,
                classification(request.override.classification),
            )
            return policy_pb2.SetClassificationResponse(field=field_message(field))
        if change == "add_matcher":
            new = request.add_matcher
            matcher = await self._privacy.add_matcher(
                caller,
                request.workspace_id,
                new.name,
                matcher_target(new.target),
                match_kind(new.kind),
                new.pattern,
                classification(new.classification),
            )
            return policy_pb2.SetClassificationResponse(matcher=matcher_message(matcher))
        if change == "remove_matcher_id":
            await self._privacy.remove_matcher(
                caller, request.workspace_id, request.remove_matcher_id
            )
            return policy_pb2.SetClassificationResponse()
        raise InvalidArgument("set one of override, add_matcher or remove_matcher_id")

    @override
    async def GetPolicy(
        self, request: policy_pb2.GetPolicyRequest, context: Context
    ) -> policy_pb2.GetPolicyResponse:
        policy = await self._policies.get(current_caller(), request.destination_id)
        return policy_pb2.GetPolicyResponse(policy=policy_message(policy))

    @override
    async def EnableEncryption(
        self, request: policy_pb2.EnableEncryptionRequest, context: Context
    ) -> policy_pb2.EnableEncryptionResponse:
        policy = await self._policies.enable(
            current_caller(),
            request.destination_id,
            list(request.fields),
            encryption_format(request.format),
            request.expected_version,
        )
        return policy_pb2.EnableEncryptionResponse(policy=policy_message(policy))

    @override
    async def UpdateEncryptedFields(
        self, request: policy_pb2.UpdateEncryptedFieldsRequest, context: Context
    ) -> policy_pb2.UpdateEncryptedFieldsResponse:
        policy = await self._policies.update(
            current_caller(),
            request.destination_id,
            list(request.add),
            list(request.remove),
            request.expected_version,
        )
        return policy_pb2.UpdateEncryptedFieldsResponse(policy=policy_message(policy))

    @override
    async def DisableEncryption(
        self, request: policy_pb2.DisableEncryptionRequest, context: Context
    ) -> policy_pb2.DisableEncryptionResponse:
        policy = await self._policies.disable(
            current_caller(),
            request.destination_id,
            request.expected_version,
            request.confirm_destination_id,
        )
        return policy_pb2.DisableEncryptionResponse(
            policy=policy_message(policy), notice=DISABLED_NOTICE
        )

    @override
    async def ListPolicyVersions(
        self, request: policy_pb2.ListPolicyVersionsRequest, context: Context
    ) -> policy_pb2.ListPolicyVersionsResponse:
        page = await self._policies.list_versions(
            current_caller(),
            request.destination_id,
            request.page.page_size,
            request.page.page_token,
        )
        return policy_pb2.ListPolicyVersionsResponse(
            versions=[policy_message(p) for p in page.versions],
            next_page_token=page.next_page_token,
        )

    @override
    async def ListSelectableFields(
        self, request: policy_pb2.ListSelectableFieldsRequest, context: Context
    ) -> policy_pb2.ListSelectableFieldsResponse:
        picker = await self._picker.list(
            current_caller(),
            request.destination_id,
            list(request.paths),
            list(request.sample_events),
            request.page.page_size,
            request.page.page_token,
        )
        return picker_message(picker)

    @override
    async def PreviewEncryption(
        self, request: policy_pb2.PreviewEncryptionRequest, context: Context
    ) -> policy_pb2.PreviewEncryptionResponse:
        preview = await self._policies.preview(
            current_caller(),
            request.destination_id,
            list(request.sample_events),
            list(request.proposed_fields),
            request.use_proposed_fields,
        )
        return preview_message(preview)

    @override
    async def WatchPolicies(
        self, request: policy_pb2.WatchPoliciesRequest, context: Context
    ) -> AsyncIterator[policy_pb2.WatchPoliciesResponse]:
        wanted = validate_filter(request.destination_ids)
        await self._catalog.authorize_watch(current_caller(), wanted)
        # Leaving the stream (client gone) must unsubscribe, or the queue grows forever.
        with self._feed.subscribe() as subscription:
            async for event in watch_events(subscription, parse_change, itemgetter(0), wanted):
                if event.change is None:
                    yield policy_pb2.WatchPoliciesResponse(
                        kind=event.kind, observed_at=event.observed_at
                    )
                    continue
                destination_id, version = event.change
                yield policy_pb2.WatchPoliciesResponse(
                    kind=event.kind,
                    destination_id=destination_id,
                    version=version,
                    observed_at=event.observed_at,
                )
