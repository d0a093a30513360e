"""Measurement scripts (`python benchmarks/zoo.py ...`), importable as modules too (`from benchmarks import zoo`)."""
