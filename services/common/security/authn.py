"""Who is calling, proven: services by a verified client certificate, people by a bearer token."""

from __future__ import annotations

from collections.abc import Mapping

from services.common.errors import Unauthenticated
from services.common.security.auth import ANONYMOUS, SERVICE_HEADER, Principal, PrincipalKind
from services.common.security.authz import Access
from services.common.security.tls import peer_service_identity
from services.common.security.tokens import TokenVerifier

AUTHORIZATION_HEADER = "authorization"


def bearer_token(metadata: Mapping[str, str]) -> str | None:
    """The token of an ``authorization: Bearer <token>`` header; None when absent."""
    value = metadata.get(AUTHORIZATION_HEADER)
    if value is None:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated('authorization metadata must be "Bearer <token>"')
    return token.strip()


class CredentialAuthenticator:
    """The production ``Authenticator``: mTLS identity for services, tokens for people.

    A service identity comes only from the verified client certificate in the auth context;
    ``x-phiseal-service`` metadata without one is refused rather than ignored, so a caller
    pretending to be a service learns why it fails.
    """

    def __init__(self, verifier: TokenVerifier, access: Access) -> None:
        self._verifier = verifier
        self._access = access

    async def authenticate(
        self, method: str, metadata: Mapping[str, str], auth_context: Mapping[str, list[bytes]]
    ) -> Principal:
        service = peer_service_identity(auth_context)
        if service is not None:
            return Principal(subject=service, kind=PrincipalKind.SERVICE)
        if metadata.get(SERVICE_HEADER):
            raise Unauthenticated(
                f"{SERVICE_HEADER} is not proof of identity: services present their client "
                "certificate (mutual TLS on the peer port)"
            )
        token = bearer_token(metadata)
        if token is not None:
            return self._verifier.verify(token).principal()
        if self._access.is_open(method):
            return ANONYMOUS
        raise Unauthenticated(
            "no credentials: send `authorization: Bearer <token>` (mint one with phiseal-token)"
        )
