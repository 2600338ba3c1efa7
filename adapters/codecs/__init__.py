"""codecs adapters."""
