"""``python -m sergeant``: the ``sergeant`` command, for environments without scripts.

This file is an entry point, not part of the core: ``import sergeant`` never loads
it, and it is the one file under ``sergeant/`` allowed to reach into the adapters
(tests/test_packaging.py checks both).
"""

from __future__ import annotations

from sergeant.adapters.cli import main

raise SystemExit(main())
