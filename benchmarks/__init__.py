"""Benchmarks (outside the library): `python -m benchmarks.bench`."""
