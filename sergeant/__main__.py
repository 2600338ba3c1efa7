"""``python -m sergeant``: the ``sergeant`` command, for environments without scripts.

This file is an entry point, not part of the core: ``import sergeant`` never loads
it, and it is the one file under ``sergeant/`` allowed to reach into the adapters
(tests/test_packaging.py checks both).
"""

from __future__ import annotations

# mypy resolves ``sergeant.adapters`` only through setuptools' package-dir mapping,
# which it cannot follow; the adapters are type-checked as the ``adapters`` folder.
from sergeant.adapters.cli import main  # type: ignore[import-not-found]

raise SystemExit(main())
