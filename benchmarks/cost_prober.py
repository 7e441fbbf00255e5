"""GetPolicy as encryptsvc, back to back, in a process of its own (as encryptsvc runs).

``python -m benchmarks.cost_prober ADDRESS TLS_DIR DESTINATION_ID`` reads commands on stdin,
one per line, and answers each with one JSON line of latencies in milliseconds:

- ``idle N``: N calls, then the answer;
- ``start``: calls until a ``stop`` line arrives, then the answer.

The prober lives apart from the benchmark's own client so that building and reading the worst
requests (megabytes of protobuf) never delays a probe: only the server is measured.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import grpc
import orjson
from phiseal.policy.v1 import policy_pb2
from phiseal.policy.v1.policy_pb2_grpc import PolicyServiceStub

from services.common.security.tls import TlsFiles, channel_credentials, server_name

DEADLINE_SECONDS = 2.0


async def _call(stub: PolicyServiceStub, request: policy_pb2.GetPolicyRequest) -> float:
    sent = time.perf_counter()
    await stub.GetPolicy(request, timeout=DEADLINE_SECONDS)
    return (time.perf_counter() - sent) * 1000


async def main(address: str, tls_dir: Path, destination_id: str) -> None:
    credentials = channel_credentials(TlsFiles.in_dir(tls_dir, "encryptsvc"))
    options = [("grpc.ssl_target_name_override", server_name("policysvc"))]
    loop = asyncio.get_running_loop()
    async with grpc.aio.secure_channel(address, credentials, options=options) as channel:
        stub = PolicyServiceStub(channel)
        request = policy_pb2.GetPolicyRequest(destination_id=destination_id)
        await _call(stub, request)  # connection and TLS handshake, outside any measurement
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            command, *args = line.split()
            times: list[float] = []
            if command == "idle":
                for _ in range(int(args[0])):
                    times.append(await _call(stub, request))
            elif command == "start":
                stop = loop.run_in_executor(None, sys.stdin.readline)
                while not stop.done():
                    times.append(await _call(stub, request))
                await stop
            sys.stdout.write(orjson.dumps(times).decode() + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), sys.argv[3]))
