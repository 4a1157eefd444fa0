"""Benchmarks behind ``jobs/bench_*.py``: :mod:`~steermoe.bench.model` (model core),
:mod:`~steermoe.bench.train` (platform vs bare loop, GPU throughput, recipes),
:mod:`~steermoe.bench.serve` (Serve under closed-loop load) and the helpers they share,
:mod:`~steermoe.bench.common` (interleaved timing, devices, the bare training step)."""
