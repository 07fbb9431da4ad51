"""Benchmarks of tf_meta against the PyTorch peer: `python -m benchmarks.run` (docs/PERFORMANCE.md)."""
