"""Evaluation harness and benchmarks for streamvae (reads ../shared/data; never used by tests)."""
