"""services/common/_fastwalk.c's bracket count is bytes.count's, on every byte value and length
(the walk itself is compared with Python's in tests/encryptsvc/test_selection.py)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from services.common import _fastwalk


def test_brackets_counts_what_bytes_count_counts() -> None:
    source = random.Random(7)
    for length in [*range(70), 255, 256, 257, 4096, 100_003]:
        raw = bytes(source.choice(b'{[]}"x\x00\xff{') for _ in range(length))
        assert _fastwalk.brackets(raw) == raw.count(b"{") + raw.count(b"[")
    assert _fastwalk.brackets(b"") == 0
    assert _fastwalk.brackets(bytearray(b"[[{")) == 3
    assert _fastwalk.brackets(memoryview(b"[x{")) == 2


def test_walk_refuses_what_is_not_its_input() -> None:
    with pytest.raises(TypeError):
        _fastwalk.brackets("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _fastwalk.locate({})  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="malformed trie"):
        _fastwalk.locate({"a": 1}, ("not", "a trie"))
    # A key the trie names whose continuation is not a node: refused, not read as one.
    trie = ((("a", "a", "oops", 1),), (), {"a": 0})
    with pytest.raises(ValueError, match="malformed trie"):
        _fastwalk.locate({"a": {"b": 1}}, trie)
    cases: list[tuple[Any, Any]] = [
        ({"a": 1}, (("a",),)),  # a step that is not (key, spelling, child, goes_on)
        ({"a": 1}, (("a", 1, 0, 0),)),  # a spelling that is not text
    ]
    for event, steps in cases:
        with pytest.raises(ValueError, match="malformed trie"):
            _fastwalk.locate(event, (steps, (), {"a": 0}))
    # An item that is not (index, child, into_dict, into_list), under a list.
    with pytest.raises(ValueError, match="malformed trie"):
        _fastwalk.locate({"a": [1]}, (((("a", "a", ((), ((-1,),), {}), 2)),), (), {"a": 0}))
    with pytest.raises(ValueError, match="malformed trie"):
        _fastwalk.locate({"a": 1}, ((), (), []))  # order not a dict
