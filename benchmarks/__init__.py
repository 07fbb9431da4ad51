"""Benchmarks against the PyTorch peer: `python -m benchmarks.run` (docs/PERFORMANCE.md)."""
