"""Pagination for every List*/Query* RPC: page-size rules and opaque tokens bound to one listing."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from services.common.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
# Positions are PostgreSQL bigints: a larger number cannot be one of ours (and would make the
# query fail as INTERNAL).
MAX_POSITION = 2**63 - 1


@dataclass(frozen=True)
class Page:
    """Which slice of a listing to return: at most ``size`` items after ``after``."""

    size: int
    after: int  # the sort key of the last item already returned; 0 for the first page

    @classmethod
    def parse(cls, size: int, token: str, scope: str) -> Page:
        """Validates a request's page; a token only works for the listing (scope) it came from."""
        if size < 0 or size > MAX_PAGE_SIZE:
            raise InvalidArgument(
                f"page_size must be between 0 and {MAX_PAGE_SIZE} (0 means {DEFAULT_PAGE_SIZE}); "
                f"got {size}"
            )
        return cls(size or DEFAULT_PAGE_SIZE, decode_token(token, scope) if token else 0)


def encode_token(scope: str, after: int) -> str:
    """An opaque token; its content is an implementation detail callers must not rely on."""
    raw = json.dumps({"s": scope, "a": after}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, scope: str) -> int:
    """The position a token points at; InvalidArgument if it is not one of ours for ``scope``."""
    malformed = InvalidArgument(
        "page_token is malformed: pass back the next_page_token of the previous response as is, "
        "or leave it empty for the first page"
    )
    if len(token) > 512:
        raise malformed
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise malformed from None
    if not isinstance(data, dict):
        raise malformed
    after = data.get("a")
    if not isinstance(after, int) or isinstance(after, bool) or not 0 <= after <= MAX_POSITION:
        raise malformed
    if data.get("s") != scope:
        raise InvalidArgument(
            "page_token was issued for a different listing: repeat the request with the same "
            "filter, or leave it empty for the first page"
        )
    return after
