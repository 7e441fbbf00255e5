"""The interceptor: request ids, error mapping, one log line per RPC, no leaked exception text."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio

from services.common import errors
from services.common.server.grpc_server import GrpcServer
from services.common.server.interceptor import STATUS_FOR_ERROR
from services.common.server.logging import configure_logging
from tests.common import fake_service
from tests.common.fake_service import Req


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[GrpcServer]:
    server = fake_service.build()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def log_lines() -> io.StringIO:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    return stream


def rpc_lines(stream: io.StringIO) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    return [line for line in lines if line.get("event") == "rpc_finished"]


async def test_request_id_from_metadata_is_echoed_and_logged(
    fake: GrpcServer, log_lines: io.StringIO
) -> None:
    """A caller's x-request-id comes back in the initial metadata and names the log line."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{fake.port}") as channel:
        call = fake_service.call(channel, "Echo")(Req(), metadata=(("x-request-id", "req-42"),))
        await call
        metadata = dict(await call.initial_metadata())
    assert metadata["x-request-id"] == "req-42"
    assert [line["request_id"] for line in rpc_lines(log_lines)] == ["req-42"]


async def test_request_id_is_generated_when_absent(fake: GrpcServer) -> None:
    """Without x-request-id the server makes one up and returns it."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{fake.port}") as channel:
        call = fake_service.call(channel, "Echo")(Req())
        await call
        metadata = dict(await call.initial_metadata())
    assert len(str(metadata["x-request-id"])) == 32


@pytest.mark.parametrize(("error", "code"), list(STATUS_FOR_ERROR.items()))
async def test_domain_errors_map_to_status_codes(
    fake: GrpcServer, error: type[errors.DomainError], code: grpc.StatusCode
) -> None:
    """Each domain error becomes its status code with its own message."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{fake.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await fake_service.call(channel, "Raise")(Req(service=error.__name__))
    assert (code, f"{error.__name__} happened: fix it like this") == (
        raised.value.code(),
        raised.value.details(),
    )


async def test_unexpected_exception_is_internal_without_its_text(
    fake: GrpcServer, log_lines: io.StringIO
) -> None:
    """A crash answers INTERNAL with a generic message; neither reply nor log holds its text."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{fake.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await fake_service.call(channel, "Crash")(Req(), metadata=(("x-request-id", "r-9"),))
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert raised.value.details() == "internal error; quote request id r-9 to the operators"
    assert "jane.doe" not in log_lines.getvalue()
    assert "E11.9" not in log_lines.getvalue()
    assert "RuntimeError" in log_lines.getvalue()


async def test_exactly_one_log_line_per_rpc(fake: GrpcServer, log_lines: io.StringIO) -> None:
    """Every RPC, failed or not, writes one canonical line with rpc, code and ms."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{fake.port}") as channel:
        await fake_service.call(channel, "Echo")(Req())
        with pytest.raises(grpc.aio.AioRpcError):
            await fake_service.call(channel, "Raise")(Req(service="NotFound"))
        with pytest.raises(grpc.aio.AioRpcError):
            await fake_service.call(channel, "Crash")(Req())
    lines = rpc_lines(log_lines)
    assert [(line["rpc"], line["code"]) for line in lines] == [
        ("/phiseal.test.Fake/Echo", "OK"),
        ("/phiseal.test.Fake/Raise", "NOT_FOUND"),
        ("/phiseal.test.Fake/Crash", "INTERNAL"),
    ]
    assert all(isinstance(line["ms"], float) for line in lines)


@pytest.mark.parametrize("kind", sorted(fake_service.AWKWARD_MESSAGES))
async def test_every_status_message_reaches_the_client(fake: GrpcServer, kind: str) -> None:
    """A domain error whose message grpc cannot send as it is (a lone surrogate, more than the
    trailers hold) still answers its code within the deadline, the message made sendable."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{fake.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await fake_service.call(channel, "RaiseAwkward")(Req(service=kind), timeout=5)
    details = raised.value.details() or ""
    assert (
        raised.value.code(),
        0 < len(details) <= 8192 and details[:10] in fake_service.AWKWARD_MESSAGES[kind],
    ) == (grpc.StatusCode.FAILED_PRECONDITION, True)
