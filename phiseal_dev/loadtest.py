"""`phiseal-loadtest`: ghz-format files in loadtest/, prepared against a stack and run without ghz.

ghz (a Go binary) runs ``loadtest/*.json`` as they are: ``ghz --config loadtest/encrypt-rate.json``.
ghz cannot be installed from the package registries this project uses, so this runner reads the
same files and prints ghz's summary (count, total, slowest/fastest/average, requests/s, response
time histogram, latency distribution, status code and error distributions):

    phiseal-loadtest prepare                      # a destination on `make run`, ids into the files
    phiseal-loadtest run loadtest/encrypt-rate.json
    phiseal-loadtest run loadtest/encrypt-closed.json --processes 2

Read from a file: ``proto``, ``call``, ``host``, ``cacert``, ``cert``, ``key``, ``cname``,
``insecure``, ``metadata``, ``data``, ``concurrency``, ``connections``, ``rps`` (absent or 0:
closed loop, as fast as ``concurrency`` calls in flight allow; otherwise that fixed rate),
``duration`` / ``total``, ``timeout``. ghz's ``{{...}}`` templates are not supported (refused).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

import orjson

from phiseal_dev.loadgen import CallTarget, ClientPool, Load, Outcome, summary_percentiles

ROOT = Path(__file__).resolve().parent.parent
LOADTEST_DIR = ROOT / "loadtest"
# What `prepare` encrypts: 3.9 fields per sample event, one path through an array.
FIELDS = (
    "context.ip",
    "context.traits.email",
    "context.traits.phone",
    "properties.allergy[*]",
    "properties.diagnosis",
    "traits.email",
    "traits.birthdate",
)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class LoadTestError(Exception):
    """A file the runner cannot run; the message names the key and the fix."""


def seconds(value: Any, key: str) -> float:
    """A ghz duration ("60s", "500ms", "2m") in seconds."""
    match = _DURATION.match(str(value).strip())
    if match is None:
        raise LoadTestError(f'"{key}": {value!r} is not a duration like "60s" or "500ms"')
    return float(match.group(1)) * _UNITS[match.group(2)]


def _method(call: str) -> tuple[str, str]:
    """ghz's "package.Service.Method" or "package.Service/Method" → (service, method)."""
    if "/" in call:
        service, method = call.rsplit("/", 1)
    else:
        service, _, method = call.rpartition(".")
    if not service or not method:
        raise LoadTestError(f'"call": {call!r} is not "package.Service.Method"')
    return service, method


def _request_class(proto: str, service: str, method: str) -> Any:
    from google.protobuf import message_factory

    # The proto's path below protos/ is its Python module (make proto generates it so).
    relative = proto.split("protos/", 1)[-1].removesuffix(".proto")
    module = relative.replace("/", ".") + "_pb2"
    try:
        generated = importlib.import_module(module)
    except ImportError:
        raise LoadTestError(f'"proto": no generated module {module} (run `make proto`)') from None
    descriptor = generated.DESCRIPTOR.services_by_name.get(service.rsplit(".", 1)[-1])
    if descriptor is None or descriptor.full_name != service:
        raise LoadTestError(f'"call": {proto} declares no service {service}')
    found = descriptor.methods_by_name.get(method)
    if found is None:
        raise LoadTestError(f'"call": {service} has no method {method}')
    return message_factory.GetMessageClass(found.input_type)


def load_file(path: Path, *, base: Path | None = None) -> tuple[CallTarget, Load]:
    """A ghz configuration file as a call target and a load (relative paths from ``base``)."""
    from google.protobuf import json_format

    config = orjson.loads(path.read_bytes())
    base = base or Path.cwd()
    text = orjson.dumps(config.get("data", {})).decode()
    if "{{" in text or "{{" in orjson.dumps(config.get("metadata", {})).decode():
        raise LoadTestError(f"{path}: ghz templates ({{{{...}}}}) are not supported here")
    for key in ("proto", "call", "host"):
        if key not in config:
            raise LoadTestError(f'{path}: "{key}" is required')
    service, method = _method(config["call"])
    request_class = _request_class(config["proto"], service, method)
    request = json_format.ParseDict(config.get("data", {}), request_class())

    def read(key: str) -> bytes | None:
        value = config.get(key)
        return None if not value else (base / value).read_bytes()

    insecure = bool(config.get("insecure", False))
    target = CallTarget(
        address=config["host"],
        method=f"/{service}/{method}",
        request=request.SerializeToString(),
        metadata=tuple((str(k), str(v)) for k, v in config.get("metadata", {}).items()),
        root_certificates=None if insecure else (read("cacert") or b""),
        certificate_chain=None if insecure else read("cert"),
        private_key=None if insecure else read("key"),
        server_name=config.get("cname") or None,
        timeout=seconds(config["timeout"], "timeout") if config.get("timeout") else 20.0,
    )
    rps = float(config.get("rps") or 0) or None
    total = int(config["total"]) if config.get("total") else None
    duration = seconds(config["duration"], "duration") if config.get("duration") else None
    if duration is None and total is None:
        total = 200  # ghz's default
    load = Load(
        target=target,
        concurrency=int(config.get("concurrency", 50)),
        connections=int(config.get("connections", 1)),
        duration=duration,
        total=None if duration is not None else total,
        rps=rps,
    )
    return target, load


def _ms(value: float) -> str:
    return f"{value * 1000:.2f} ms"


def summary(outcome: Outcome) -> str:
    """ghz's summary of a run."""
    latencies = outcome.latencies
    lines = ["", "Summary:", f"  Count:\t{outcome.count}", f"  Total:\t{_ms(outcome.elapsed)}"]
    if latencies:
        lines += [
            f"  Slowest:\t{_ms(max(latencies))}",
            f"  Fastest:\t{_ms(min(latencies))}",
            f"  Average:\t{_ms(sum(latencies) / len(latencies))}",
        ]
    lines += [f"  Requests/sec:\t{outcome.rate:.2f}", ""]
    if latencies:
        lines.append("Response time histogram:")
        low, high = min(latencies), max(latencies)
        width = (high - low) / 10 or 1.0
        buckets = [0] * 11
        for value in latencies:
            buckets[min(10, int((value - low) / width))] += 1
        peak = max(buckets)
        for i, count in enumerate(buckets):
            bar = "∎" * math.ceil(40 * count / peak) if count else ""
            lines.append(f"  {(low + i * width) * 1000:.3f} [{count}]\t|{bar}")
        lines += ["", "Latency distribution:"]
        for p in summary_percentiles():
            lines.append(f"  {p:g} % in {_ms(outcome.percentile(p))}")
    lines += ["", "Status code distribution:"]
    for status, count in outcome.statuses.most_common():
        lines.append(f"  [{status}]\t{count} responses")
    if outcome.errors:
        lines += ["", "Error distribution:"]
        for error, count in outcome.errors.most_common():
            lines.append(f"  [{count}]\t{error}")
    if outcome.late:
        lines += ["", f"({outcome.late} calls started more than 1 ms after their scheduled time)"]
    return "\n".join(lines) + "\n"


def run(path: Path, processes: int, overrides: dict[str, Any]) -> Outcome:
    from dataclasses import replace

    _, load = load_file(path)
    load = replace(load, **{k: v for k, v in overrides.items() if v is not None})
    mode = f"fixed rate {load.rps:g}/s" if load.rps else "closed loop"
    span = f"{load.duration:g} s" if load.duration is not None else f"{load.total} calls"
    print(
        f"{path.name}: {mode}, {load.concurrency} in flight over {load.connections} "
        f"connection(s), {span}, {processes} client process(es) → {load.target.address}",
        flush=True,
    )
    with ClientPool(processes) as pool:
        return pool.run(load)


async def create_destination(args: argparse.Namespace) -> str:
    """A HIPAA-eligible workspace and a destination encrypting FIELDS on a running stack."""
    import grpc
    from phiseal.common.v1 import common_pb2
    from phiseal.keys.v1 import keys_pb2, keys_pb2_grpc
    from phiseal.policy.v1 import policy_pb2, policy_pb2_grpc

    secrets = Path(args.run_dir) / "dev-secrets"
    token = (secrets / "admin.token").read_text().strip()
    metadata = (("authorization", f"Bearer {token}"),)
    credentials = grpc.ssl_channel_credentials((secrets / "ca.pem").read_bytes())
    async with (
        grpc.aio.secure_channel(args.policysvc, credentials) as policy_channel,
        grpc.aio.secure_channel(args.keysvc, credentials) as keys_channel,
    ):
        policy = policy_pb2_grpc.PolicyServiceStub(policy_channel)
        keys = keys_pb2_grpc.KeyServiceStub(keys_channel)
        workspace = (
            await policy.CreateWorkspace(
                policy_pb2.CreateWorkspaceRequest(name="Load test"), metadata=metadata
            )
        ).workspace.workspace_id
        await policy.SetHipaaEligibility(
            policy_pb2.SetHipaaEligibilityRequest(
                workspace_id=workspace, eligible=True, baa_reference="load test"
            ),
            metadata=metadata,
        )
        for path in FIELDS:
            await policy.SetClassification(
                policy_pb2.SetClassificationRequest(
                    workspace_id=workspace,
                    override=policy_pb2.PathOverride(
                        path=path, classification=policy_pb2.CLASSIFICATION_YELLOW
                    ),
                ),
                metadata=metadata,
            )
        destination = (
            await policy.CreateDestination(
                policy_pb2.CreateDestinationRequest(
                    workspace_id=workspace,
                    name="Load test webhook",
                    type=policy_pb2.DESTINATION_TYPE_EVENT_STREAM_CLOUD_MODE,
                ),
                metadata=metadata,
            )
        ).destination.destination_id
        await keys.GenerateKeyPair(
            keys_pb2.GenerateKeyPairRequest(
                destination_id=destination, algorithm=common_pb2.KEY_ALGORITHM_RSA_2048
            ),
            metadata=metadata,
        )
        await policy.EnableEncryption(
            policy_pb2.EnableEncryptionRequest(
                destination_id=destination,
                fields=list(FIELDS),
                format=common_pb2.ENCRYPTION_FORMAT_JWE,
                expected_version=0,
            ),
            metadata=metadata,
        )
    return destination


def prepare(args: argparse.Namespace) -> None:
    """Creates a destination, then writes its id, the encryptsvc peer address and the
    secrets' paths into the files."""
    destination = asyncio.run(create_destination(args))
    secrets = Path(args.run_dir) / "dev-secrets"
    relative = os.path.relpath(secrets, Path.cwd())
    for path in args.files:
        config = orjson.loads(path.read_bytes())
        config["host"] = args.encryptsvc
        config["cacert"] = f"{relative}/ca.pem"
        config["cert"] = f"{relative}/producer.pem"
        config["key"] = f"{relative}/producer-key.pem"
        config.setdefault("data", {})["destination_id"] = destination
        path.write_bytes(orjson.dumps(config, option=orjson.OPT_INDENT_2) + b"\n")
        print(f"{path}: destination {destination}, host {args.encryptsvc}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="phiseal-loadtest", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="create a destination on a running stack; fill the files")
    p.add_argument("--run-dir", default=os.environ.get("PHISEAL_RUN_DIR", str(ROOT / ".run")))
    p.add_argument("--policysvc", default="localhost:50052", help="policysvc service port")
    p.add_argument("--keysvc", default="localhost:50051", help="keysvc service port")
    p.add_argument("--encryptsvc", default="localhost:50153", help="encryptsvc peer port")
    p.add_argument("files", nargs="*", type=Path, default=sorted(LOADTEST_DIR.glob("*.json")))
    r = sub.add_parser("run", help="run one ghz configuration file and print ghz's summary")
    r.add_argument("file", type=Path)
    r.add_argument("--processes", type=int, default=2, help="client processes (default 2)")
    r.add_argument("--rps", type=float, help='override "rps" (calls/s in all)')
    r.add_argument("--duration", help='override "duration", e.g. 60s')
    r.add_argument("--concurrency", type=int, help='override "concurrency"')
    args = parser.parse_args(argv)
    try:
        if args.command == "prepare":
            prepare(args)
            return
        overrides = {
            "rps": args.rps,
            "duration": seconds(args.duration, "--duration") if args.duration else None,
            "concurrency": args.concurrency,
        }
        outcome = run(args.file, args.processes, overrides)
    except (LoadTestError, OSError) as exc:
        print(f"phiseal-loadtest: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(summary(outcome), end="")


if __name__ == "__main__":
    main()
