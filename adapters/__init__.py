"""Adapters: sergeant's implementations of the core's ports, and its driving programs.

Lives in the repository as the top-level folder ``adapters/`` and ships as the
subpackage ``sergeant.adapters``. Import it only under that name: a bare
``import adapters`` would collide with an unrelated distribution that installs a
top-level ``adapters`` package. Importing this package imports nothing heavy; each
backend module imports its driver (redis, pymongo, msgpack, psutil) itself.
"""

from __future__ import annotations

if __name__ != "sergeant.adapters":  # pragma: no cover - exercised in a subprocess
    raise ImportError(
        f"sergeant's adapters were imported as {__name__!r}; "
        "import them as 'sergeant.adapters' (pip install the sergeant distribution)"
    )
