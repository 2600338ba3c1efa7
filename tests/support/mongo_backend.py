"""Fixtures for the mongo backend (filled in by its adapter work)."""
