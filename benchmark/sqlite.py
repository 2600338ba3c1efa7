"""SqliteBroker's throughput on a temporary file (not a test): ``benchmark.broker``
with SQLite's defaults.

Run from the repository root::

    python -m benchmark.sqlite [--tasks 50000] [--single 5000]

Bulks of 10,000 per push and batches of 100 per reserve; every other option of
``python -m benchmark.broker`` applies.
"""

from __future__ import annotations

from .broker import main

if __name__ == "__main__":
    main(brokers="sqlite", tasks=50_000, single=5_000, bulk=10_000, batch=100)
