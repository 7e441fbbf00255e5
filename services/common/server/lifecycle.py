"""One lifecycle: components that start and stop, background tasks, and periodic jobs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import structlog

log = structlog.get_logger("lifecycle")

Sleep = Callable[[float], Awaitable[object]]


class Component(Protocol):
    """Something a service starts once it serves and stops once it no longer does."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def component_name(component: Component) -> str:
    """The name a log line gives ``component``: its ``name`` if it has one, else its type."""
    name = getattr(component, "name", None)
    return name if isinstance(name, str) else type(component).__name__


class Background:
    """One named task: ``start`` creates it, ``stop`` cancels it and waits until it has ended.

    A task that ends with an exception before it is stopped is logged when it ends (by error
    type), so a loop that dies is never silent; ``stop`` does not raise it again.
    """

    def __init__(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        self.name = name
        self._run = run
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _main(self) -> None:
        await self._run()

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError(f"{self.name} is already started")
        self._task = asyncio.create_task(self._main(), name=self.name)
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()  # also marks it retrieved: no "never retrieved" warning
        if exc is not None:
            log.error("background_task_failed", task=self.name, error_type=type(exc).__name__)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        # wait(), not `suppress(CancelledError): await task`: that would also swallow a
        # cancellation of stop() itself, and re-raise whatever the task died of.
        await asyncio.wait([task])


class Periodic:
    """Runs ``job`` every ``interval`` seconds until stopped, the first run one interval in.

    A failed run is logged by error type and retried at the next interval; ``stop`` cancels a
    run in progress. ``sleep`` is injectable so tests drive the ticks instead of waiting.
    """

    def __init__(
        self,
        name: str,
        interval: float,
        job: Callable[[], Awaitable[object]],
        *,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.name = name
        self._interval = interval
        self._job = job
        self._sleep = sleep
        self._task = Background(name, self._loop)

    async def _loop(self) -> None:
        while True:
            await self._sleep(self._interval)
            try:
                await self._job()
            except Exception as exc:  # the next interval retries; the loop must not end
                log.error("periodic_job_failed", job=self.name, error_type=type(exc).__name__)

    async def start(self) -> None:
        await self._task.start()

    async def stop(self) -> None:
        await self._task.stop()


class Closing:
    """A resource opened before start-up that only needs closing (a pool, a peer channel)."""

    def __init__(self, name: str, close: Callable[[], Awaitable[object]]) -> None:
        self.name = name
        self._close = close

    async def start(self) -> None:
        pass  # already open: its owner opened it while wiring

    async def stop(self) -> None:
        await self._close()


class Components:
    """Components started in order and stopped in reverse order.

    A component that fails to start stops the ones already started (in reverse) and its error
    propagates. A component that fails to stop is logged and the others still stop: shutdown
    must release the pool even when a relay's stop goes wrong.
    """

    def __init__(self, components: Sequence[Component], name: str = "components") -> None:
        self.name = name
        self._components = list(components)
        self._stack: contextlib.AsyncExitStack | None = None

    async def start(self) -> None:
        if self._stack is not None:
            raise RuntimeError(f"{self.name} are already started")
        async with contextlib.AsyncExitStack() as stack:
            for component in self._components:
                await component.start()
                stack.push_async_callback(_stop_logged, component)
            self._stack = stack.pop_all()

    async def stop(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()


async def _stop_logged(component: Component) -> None:
    try:
        await component.stop()
    except Exception as exc:  # keep stopping the rest
        log.error("stop_failed", component=component_name(component), error_type=type(exc).__name__)
