"""DestinationDirectory over policysvc's GetDestination: the only way keysvc learns of one."""

from __future__ import annotations

import grpc
from phiseal.policy.v1 import policy_pb2, policy_pb2_grpc

from services.common.errors import InvalidArgument, NotFound, Unavailable
from services.keysvc.keys import Destination


class PolicyDirectory:
    """Asks policysvc; anything but a clear answer is Unavailable (fail closed)."""

    def __init__(self, channel: grpc.aio.Channel, timeout: float = 5.0) -> None:
        self._stub = policy_pb2_grpc.PolicyServiceStub(channel)
        self._timeout = timeout

    async def get(self, destination_id: str) -> Destination:
        try:
            response = await self._stub.GetDestination(
                policy_pb2.GetDestinationRequest(destination_id=destination_id),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.NOT_FOUND:
                raise NotFound(
                    f"destination {destination_id} not found: create it in policysvc first"
                ) from None
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidArgument(
                    f"policysvc refused destination id {destination_id!r}: {exc.details()}"
                ) from None
            raise Unavailable(
                f"cannot confirm destination {destination_id} with policysvc "
                f"({code.name}); no key was changed, retry later"
            ) from None
        found = response.destination
        if found.destination_id != destination_id or not found.workspace_id:
            raise Unavailable(
                f"policysvc gave an incomplete answer for destination {destination_id}; "
                "no key was changed, retry later"
            )
        problems = tuple(response.encryption_problems)
        if not response.encryption_allowed and not problems:
            # An older policysvc says nothing about eligibility: do not assume it.
            problems = (
                "policysvc did not confirm that it may have encryption (it must be an "
                "event-stream cloud-mode destination of a HIPAA-eligible workspace); upgrade "
                "policysvc or check the destination with GetDestination",
            )
        return Destination(found.destination_id, found.workspace_id, problems)
