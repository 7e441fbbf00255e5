"""A policy version's field list compiled once (cached) into the selection trie the hot path
walks; see services/common/selection.py."""

from __future__ import annotations

import functools

from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.fieldpath import parse_selection
from services.common.selection import Located, Selection, build_selection

__all__ = ["Located", "Selection", "compile_selection"]


@functools.lru_cache(maxsize=4096)
def compile_selection(fields: tuple[str, ...]) -> Selection:
    """A policy's paths, parsed and compiled once per distinct field list (per policy version)."""
    try:
        paths = parse_selection(fields)
    except InvalidArgument as exc:
        # policysvc validates paths; if one still does not parse, encrypting "the rest" could
        # leak the field it meant, so the batch fails instead.
        raise FailedPrecondition(f"the destination's policy is unusable: {exc.message}") from None
    return build_selection(paths)
