"""Keeps the garbage collector off while the worker decodes a batch.

Decoding a batch of a thousand tasks allocates several thousand objects that all
stay alive until the batch is settled. With the collector on, every 700
allocations start a collection that scans the new objects, and the survivors are
scanned again by the older generations' collections: scans that free nothing.
Paused while the batch is decoded (only sergeant's code and the codec run then,
never a task's, and nothing waits), the batch is scanned once, after. The pause
lasts milliseconds; other threads of the process, if any, go without collections
for that long.
"""

from __future__ import annotations

import gc


class GcPause:
    """An idempotent pause: ``start`` turns the collector off if it was on;
    ``end`` turns it back on only if ``start`` turned it off."""

    __slots__ = ("_paused",)

    def __init__(self) -> None:
        self._paused = False

    def start(self) -> None:
        """Pause the collector, unless it is off already (by us or the user)."""
        if not self._paused and gc.isenabled():
            gc.disable()
            self._paused = True

    def end(self) -> None:
        """Resume the collector if this pause stopped it."""
        if self._paused:
            self._paused = False
            gc.enable()
