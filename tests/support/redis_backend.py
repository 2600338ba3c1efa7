"""Fixtures for the redis backend (filled in by its adapter work)."""
