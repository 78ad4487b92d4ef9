"""Benchmark scripts for botkit (run from the repository root; see benchmarks/README.md)."""
