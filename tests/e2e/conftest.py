"""One `make run` stack shared by the operations tests (demo, metrics, Node, walkthrough)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.stack import RunningStack


@pytest.fixture(scope="session")
def dev_stack() -> Iterator[RunningStack]:
    stack = RunningStack()
    stack.start()
    yield stack
    stack.stop()
