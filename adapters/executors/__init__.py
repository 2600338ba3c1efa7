"""executors adapters."""
