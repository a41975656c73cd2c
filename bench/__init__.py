"""Benchmarks: each prints its figures (rows/s, ms) and the command that made them; results go in bench/README.md."""
