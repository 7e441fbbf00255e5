"""`make bench`: runs every benchmarks/bench_*.py module's ``main()`` (or only those named).

Benchmarks never assert times: they print medians, p50/p99 and ratios against baselines run in
the same process, because the machines are shared and noisy.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import pkgutil
import sys
import traceback

import benchmarks


def main(argv: list[str]) -> None:
    names = sorted(
        m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_")
    )
    wanted = [n for n in names if not argv or any(a in n for a in argv)]
    if not wanted:
        print("no benchmarks yet" if not names else f"no benchmark matches {argv}; have {names}")
        return
    failed = []
    for name in wanted:
        module = importlib.import_module(f"benchmarks.{name}")
        print(f"\n=== {name} ===", flush=True)
        try:
            result = module.main()
            if inspect.iscoroutine(result):
                asyncio.run(result)
        except Exception:  # one broken benchmark must not hide the others' numbers
            traceback.print_exc()
            failed.append(name)
    if failed:
        print(f"\nbenchmarks that failed: {', '.join(failed)}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
