"""The one lifecycle: components in order and reverse, unwinding, background tasks, Periodic."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from structlog.testing import capture_logs

from services.common.security.auth import DevelopmentAuthenticator
from services.common.server.grpc_server import GrpcServer, ServerParts
from services.common.server.lifecycle import Background, Closing, Components, Periodic
from tests.common import fake_service
from tests.common.fake_service import Req


class Recorder:
    """A component that writes what happened to it into a shared journal."""

    def __init__(self, name: str, journal: list[str], *, fail_start: bool = False) -> None:
        self.name = name
        self._journal = journal
        self._fail_start = fail_start

    async def start(self) -> None:
        if self._fail_start:
            raise ConnectionError(f"{self.name} cannot start")
        self._journal.append(f"start {self.name}")

    async def stop(self) -> None:
        self._journal.append(f"stop {self.name}")


class Ticks:
    """An injectable sleep: each sleep waits until the test releases one tick."""

    def __init__(self) -> None:
        self._ticks: asyncio.Queue[None] = asyncio.Queue()
        self.waiting = asyncio.Event()

    async def sleep(self, _seconds: float) -> None:
        self.waiting.set()
        await self._ticks.get()

    def release(self) -> None:
        """Ends one sleep."""
        self.waiting.clear()
        self._ticks.put_nowait(None)

    async def tick(self) -> None:
        """Ends one sleep and waits until the loop sleeps again (the job has run)."""
        self.release()
        async with asyncio.timeout(5):
            await self.waiting.wait()


async def test_components_start_in_order_and_stop_in_reverse() -> None:
    """Dependencies first on the way up, last on the way down."""
    journal: list[str] = []
    components = Components([Recorder(n, journal) for n in ("pool", "client", "relay")])
    await components.start()
    await components.stop()
    assert journal == [
        "start pool",
        "start client",
        "start relay",
        "stop relay",
        "stop client",
        "stop pool",
    ]


async def test_a_failing_start_unwinds_what_started() -> None:
    """The components before the failing one stop in reverse; the ones after never start."""
    journal: list[str] = []
    components = Components(
        [
            Recorder("pool", journal),
            Recorder("client", journal),
            Recorder("feed", journal, fail_start=True),
            Recorder("relay", journal),
        ]
    )
    with pytest.raises(ConnectionError, match="feed cannot start"):
        await components.start()
    unwound = list(journal)
    await components.stop()  # nothing left to stop: no second stop of pool or client
    assert (unwound, journal) == (
        ["start pool", "start client", "stop client", "stop pool"],
        ["start pool", "start client", "stop client", "stop pool"],
    )


async def test_a_failing_stop_is_logged_and_the_rest_still_stop() -> None:
    """One broken stop must not keep the pool open."""
    journal: list[str] = []

    async def broken() -> None:
        raise OSError("socket gone")

    components = Components(
        [Recorder("pool", journal), Closing("client", broken), Recorder("relay", journal)]
    )
    await components.start()
    with capture_logs() as logs:
        await components.stop()
    failed = [e for e in logs if e["event"] == "stop_failed"]
    assert journal == ["start pool", "start relay", "stop relay", "stop pool"]
    assert [(e["component"], e["error_type"]) for e in failed] == [("client", "OSError")]


async def test_background_task_that_dies_is_logged_and_stop_does_not_raise() -> None:
    """A loop that crashes is reported when it crashes, by error type, not re-raised later."""
    died = asyncio.Event()

    async def run() -> None:
        died.set()
        raise ValueError("secret detail")

    task = Background("doomed", run)
    with capture_logs() as logs:
        await task.start()
        await died.wait()
        await asyncio.sleep(0)  # the done callback runs one loop turn after the task ends
        await task.stop()
    assert [(e["event"], e["task"], e["error_type"]) for e in logs] == [
        ("background_task_failed", "doomed", "ValueError")
    ]
    assert "secret detail" not in repr(logs)


async def test_cancelling_stop_is_not_swallowed() -> None:
    """stop() cancelled while the task winds down is cancelled too, not silently finished.

    The hand-written ``cancel(); with suppress(CancelledError): await task`` swallowed it.
    """
    entered, release, ended = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def run() -> None:
        try:
            entered.set()
            await asyncio.Event().wait()
        finally:
            await release.wait()  # a slow clean-up (closing a connection, say)
            ended.set()

    task = Background("slow-to-stop", run)
    await task.start()
    await entered.wait()
    stopper = asyncio.create_task(task.stop())
    await asyncio.sleep(0)  # stop() is now waiting for the task
    stopper.cancel()
    async with asyncio.timeout(5):
        with pytest.raises(asyncio.CancelledError):
            await stopper
        release.set()
        await ended.wait()


async def test_periodic_keeps_running_after_a_failing_job() -> None:
    """A failed run is logged by error type and the next interval runs the job again."""
    runs: list[int] = []

    async def job() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise TimeoutError("database slow")

    ticks = Ticks()
    periodic = Periodic("sweep", 60.0, job, sleep=ticks.sleep)
    with capture_logs() as logs:
        await periodic.start()
        try:
            await ticks.waiting.wait()
            await ticks.tick()
            await ticks.tick()
        finally:
            await periodic.stop()
    failed = [e for e in logs if e["event"] == "periodic_job_failed"]
    assert runs == [0, 1]
    assert [(e["job"], e["error_type"]) for e in failed] == [("sweep", "TimeoutError")]


async def test_periodic_stops_during_its_sleep() -> None:
    """stop() does not wait out the interval (an hour here)."""
    periodic = Periodic("hourly", 3600.0, lambda: asyncio.sleep(0))
    await periodic.start()
    async with asyncio.timeout(5):
        await periodic.stop()


async def test_periodic_stops_during_a_run() -> None:
    """stop() cancels a run in progress instead of waiting for it to end."""
    started = asyncio.Event()
    cancelled: list[bool] = []

    async def job() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    ticks = Ticks()
    periodic = Periodic("stuck", 1.0, job, sleep=ticks.sleep)
    await periodic.start()
    await ticks.waiting.wait()
    ticks.release()
    await started.wait()
    async with asyncio.timeout(5):
        await periodic.stop()
    assert cancelled == [True]


def _server(components: list[Any]) -> GrpcServer:
    parts = ServerParts(
        name="fake",
        service_names=[fake_service.SERVICE],
        register=fake_service.register,
        authenticator=DevelopmentAuthenticator(),
        components=components,
    )
    return GrpcServer(parts, host="127.0.0.1", port=0, grace=3, check_interval=0.1)


class Witness(Recorder):
    """Records, at its stop, whether the in-flight call had finished and new calls fail."""

    server: GrpcServer
    in_flight: asyncio.Future[Any]

    async def stop(self) -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.server.port}") as channel:
            try:
                await fake_service.call(channel, "Echo")(Req(), timeout=2)
                refused = False
            except grpc.aio.AioRpcError:
                refused = True
        self._journal.append(f"stop {self.name} done={self.in_flight.done()} refused={refused}")


async def test_server_stops_serving_before_components_stop_in_reverse() -> None:
    """Shutdown: the server finishes in-flight calls and closes, then components in reverse."""
    journal: list[str] = []
    pool, client = Witness("pool", journal), Witness("client", journal)
    server = _server([pool, client])
    pool.server = client.server = server
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        fake_service.SLOW_STARTED.clear()
        in_flight = asyncio.ensure_future(fake_service.call(channel, "Slow")(Req(service="0.3")))
        pool.in_flight = client.in_flight = in_flight
        async with asyncio.timeout(10):
            await fake_service.SLOW_STARTED.wait()
        await server.stop()
        await in_flight
    assert journal == [
        "start pool",
        "start client",
        "stop client done=True refused=True",
        "stop pool done=True refused=True",
    ]


async def test_server_whose_component_fails_to_start_releases_everything() -> None:
    """start() raises, the components already started stop, and the port is closed."""
    journal: list[str] = []
    server = _server(
        [Recorder("pool", journal), Recorder("relay", journal, fail_start=True)],
    )
    with pytest.raises(ConnectionError, match="relay cannot start"):
        await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await fake_service.call(channel, "Echo")(Req(), timeout=2)
    assert journal == ["start pool", "stop pool"]
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
