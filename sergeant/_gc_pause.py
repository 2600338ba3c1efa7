"""Keeps the garbage collector off the batch a worker holds.

Decoding a batch of a thousand tasks allocates several thousand objects that all
stay alive until the batch is settled. With the collector on, every 700
allocations start a collection that scans the new objects; the survivors are
scanned again by the middle generation's collections and then promoted to the
oldest, where they count towards the next full collection, which scans the whole
heap. All those scans free nothing: the batch is alive until it is settled, and
it is freed by reference counting after.

So, for a large batch, the collector is paused while the batch is decoded (only
sergeant's code and the codec run then, never a task's, and nothing waits), and
the batch is then set aside with ``gc.freeze()`` until it is settled:
collections that the tasks' own allocations start while it runs skip it, and no
collection scans it at all. ``gc.unfreeze()`` puts it back, in the oldest
generation, where reference counting frees it. A producer's large push is kept
aside the same way until it is pushed. That is about a tenth of a batch drain's
time and of a bulk push's (``docs/performance.md``, "Before and after").

What that costs, and why it is safe:

- The collector stays on while tasks run; only objects that existed before the
  batch started running are set aside, for as long as the batch runs.
- ``gc.freeze()`` sets aside every object the collector tracks, not only the
  batch's. A cycle of garbage among them would be freed only by a full
  collection once put back, and garbage moved that way does not count towards
  starting one. So the young generations are collected when a frozen batch is put
  back, right away, and only what sergeant's own code allocates while reserving
  and decoding the next batch (plus whatever other threads of the process make
  meanwhile) is young at the next freeze.
- A process that uses ``gc.freeze()`` itself (say, before forking) keeps it:
  nothing is frozen while objects are frozen already, because the
  ``gc.unfreeze()`` would also put back the process's own; the pause that finds
  them never freezes again. A task that calls ``gc.freeze()`` while a frozen
  batch runs has its objects put back with the batch's.
- With the collector off (``gc.disable()``), nothing is paused or frozen.
- A child process forked while a batch is frozen (a process pool replacing a
  dead child) inherits the frozen objects, which is what ``gc.freeze()`` is
  for: they stay shared with the parent instead of being copied by the child's
  collections.
"""

from __future__ import annotations

import gc

# A batch smaller than this allocates fewer objects than one young collection
# scans (the collector's first threshold is 700 allocations, and a task makes
# about three): there is nothing to save that would pay for the collection that
# putting a frozen batch back costs (about 10 µs).
FREEZE_AT = 256


class GcPause:
    """An idempotent pause: ``start`` turns the collector off if it was on;
    ``end`` turns it back on only if ``start`` turned it off. ``freeze``, while
    paused, sets the objects tracked so far aside until ``thaw``.

    Args:
        may_freeze: whether ``freeze`` may act at all; it turns False for good
            when ``freeze`` finds objects frozen already.
    """

    __slots__ = ("_frozen", "_paused", "may_freeze")

    def __init__(self, *, may_freeze: bool = False) -> None:
        self._paused = False
        self._frozen = False
        self.may_freeze = may_freeze

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

    def freeze(self) -> None:
        """While this pause holds the collector off: set every tracked object
        aside (``gc.freeze()``) until ``thaw``. Otherwise nothing.

        Not when objects are frozen already (the process's own, or a batch of a
        worker whose task pushes): ``thaw`` would put those back too. Asking
        costs nothing when none are (``gc.get_freeze_count()`` walks the frozen
        objects), and once some are seen this pause stops asking and freezing.
        """
        if not self._paused or not self.may_freeze or self._frozen:
            return
        if gc.get_freeze_count():
            self.may_freeze = False
            return
        gc.freeze()
        self._frozen = True

    def thaw(self) -> None:
        """Put back what ``freeze`` set aside, then collect the young generations
        (see the module's docstring for why)."""
        if self._frozen:
            self._frozen = False
            gc.unfreeze()
            gc.collect(1)
