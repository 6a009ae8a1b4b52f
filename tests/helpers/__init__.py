"""Helpers shared by tests and benchmarks (engines, not fixtures)."""
