"""Benchmarks: each `bench_*.py` module prints its numbers as ratios against in-run baselines."""
