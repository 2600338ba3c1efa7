"""Fixtures for the memory backend (filled in by its adapter work)."""
