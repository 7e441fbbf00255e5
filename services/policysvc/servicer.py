"""policysvc transport: proto → domain → proto. No SQL, no domain try/except."""

from __future__ import annotations

from collections.abc import AsyncIterator

from phiseal.policy.v1 import policy_pb2, policy_pb2_grpc
from typing_extensions import override

from services.common.errors import Unimplemented
from services.common.interceptor import Context
from services.policysvc.catalog import Catalog
from services.policysvc.messages import (
    destination_message,
    destination_type,
    workspace_message,
)


def _missing(rpc: str) -> str:
    return f"{rpc} is not implemented yet: the control plane lands with the policysvc issue"


class PolicyServicer(policy_pb2_grpc.PolicyServiceServicer):
    """phiseal.policy.v1.PolicyService."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    @override
    async def CreateWorkspace(
        self, request: policy_pb2.CreateWorkspaceRequest, context: Context
    ) -> policy_pb2.CreateWorkspaceResponse:
        workspace = await self._catalog.create_workspace(request.name)
        return policy_pb2.CreateWorkspaceResponse(workspace=workspace_message(workspace))

    @override
    async def GetWorkspace(
        self, request: policy_pb2.GetWorkspaceRequest, context: Context
    ) -> policy_pb2.GetWorkspaceResponse:
        workspace = await self._catalog.get_workspace(request.workspace_id)
        return policy_pb2.GetWorkspaceResponse(workspace=workspace_message(workspace))

    @override
    async def SetHipaaEligibility(
        self, request: policy_pb2.SetHipaaEligibilityRequest, context: Context
    ) -> policy_pb2.SetHipaaEligibilityResponse:
        workspace = await self._catalog.set_hipaa_eligibility(
            request.workspace_id, request.eligible, request.baa_reference
        )
        return policy_pb2.SetHipaaEligibilityResponse(workspace=workspace_message(workspace))

    @override
    async def CreateDestination(
        self, request: policy_pb2.CreateDestinationRequest, context: Context
    ) -> policy_pb2.CreateDestinationResponse:
        destination = await self._catalog.create_destination(
            request.workspace_id, request.name, destination_type(request.type)
        )
        return policy_pb2.CreateDestinationResponse(destination=destination_message(destination))

    @override
    async def GetDestination(
        self, request: policy_pb2.GetDestinationRequest, context: Context
    ) -> policy_pb2.GetDestinationResponse:
        destination = await self._catalog.get_destination(request.destination_id)
        return policy_pb2.GetDestinationResponse(destination=destination_message(destination))

    @override
    async def ListDestinations(
        self, request: policy_pb2.ListDestinationsRequest, context: Context
    ) -> policy_pb2.ListDestinationsResponse:
        page = await self._catalog.list_destinations(
            request.workspace_id, request.page.page_size, request.page.page_token
        )
        return policy_pb2.ListDestinationsResponse(
            destinations=[destination_message(d) for d in page.destinations],
            next_page_token=page.next_page_token,
        )

    @override
    async def ListClassifications(
        self, request: policy_pb2.ListClassificationsRequest, context: Context
    ) -> policy_pb2.ListClassificationsResponse:
        raise Unimplemented(_missing("ListClassifications"))

    @override
    async def SetClassification(
        self, request: policy_pb2.SetClassificationRequest, context: Context
    ) -> policy_pb2.SetClassificationResponse:
        raise Unimplemented(_missing("SetClassification"))

    @override
    async def GetPolicy(
        self, request: policy_pb2.GetPolicyRequest, context: Context
    ) -> policy_pb2.GetPolicyResponse:
        raise Unimplemented(_missing("GetPolicy"))

    @override
    async def EnableEncryption(
        self, request: policy_pb2.EnableEncryptionRequest, context: Context
    ) -> policy_pb2.EnableEncryptionResponse:
        raise Unimplemented(_missing("EnableEncryption"))

    @override
    async def UpdateEncryptedFields(
        self, request: policy_pb2.UpdateEncryptedFieldsRequest, context: Context
    ) -> policy_pb2.UpdateEncryptedFieldsResponse:
        raise Unimplemented(_missing("UpdateEncryptedFields"))

    @override
    async def DisableEncryption(
        self, request: policy_pb2.DisableEncryptionRequest, context: Context
    ) -> policy_pb2.DisableEncryptionResponse:
        raise Unimplemented(_missing("DisableEncryption"))

    @override
    async def ListPolicyVersions(
        self, request: policy_pb2.ListPolicyVersionsRequest, context: Context
    ) -> policy_pb2.ListPolicyVersionsResponse:
        raise Unimplemented(_missing("ListPolicyVersions"))

    @override
    async def PreviewEncryption(
        self, request: policy_pb2.PreviewEncryptionRequest, context: Context
    ) -> policy_pb2.PreviewEncryptionResponse:
        raise Unimplemented(_missing("PreviewEncryption"))

    @override
    async def WatchPolicies(
        self, request: policy_pb2.WatchPoliciesRequest, context: Context
    ) -> AsyncIterator[policy_pb2.WatchPoliciesResponse]:
        for _ in ():  # an async generator, like the real stream will be
            yield policy_pb2.WatchPoliciesResponse()
        raise Unimplemented(_missing("WatchPolicies"))
