"""Generators for the reference documents in ``docs/`` (run as modules)."""
