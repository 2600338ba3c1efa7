"""Fixtures for the sqlite backend (filled in by its adapter work)."""
