"""Benchmarks of cvt_lab, run from the repository root (``python -m benchmarks.cvt_bench``); not installed
with the package."""
