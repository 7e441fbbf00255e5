"""Domain error types: the domain raises these, the interceptor maps them to gRPC codes.

Messages are shown to callers verbatim, so they must name the problem and how to fix it and
must never contain a secret or a PHI value.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error a caller may see; its message is safe to return."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(DomainError):
    """The request is malformed; retrying it unchanged will fail again."""


class NotFound(DomainError):
    """The named object does not exist (or the caller may not know that it does)."""


class AlreadyExists(DomainError):
    """The object to create exists already."""


class FailedPrecondition(DomainError):
    """The system is not in the state the request needs (e.g. workspace not HIPAA eligible)."""


class Aborted(DomainError):
    """A concurrent change won (e.g. a stale expected version); re-read and retry."""


class PermissionDenied(DomainError):
    """The caller is known but may not do this."""


class Unauthenticated(DomainError):
    """The caller could not be identified."""


class ResourceExhausted(DomainError):
    """A limit was reached (batch size, number of matchers, ...)."""


class Unavailable(DomainError):
    """A dependency is down or data may be stale; retry later. Fail closed."""


class DeadlineExceeded(DomainError):
    """The work could not finish in time."""


class Unimplemented(DomainError):
    """The RPC exists in the contract but is not built yet; the message says what is missing."""
