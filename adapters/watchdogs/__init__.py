"""watchdogs adapters."""
