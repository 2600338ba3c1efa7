"""Supervision policy: pure decisions about worker processes, no I/O.

The supervisor adapter (``sergeant.adapters.supervisor``) observes its children (exit
codes, memory readings, the clock) and asks this module what to do; keeping the
decisions here makes them testable without processes.

Rules:
- A child that exits because it asked to stop (``StopReason.STOPPED``) is retired;
  every other exit (respawn asked, task budget spent, memory recycle, crash, kill) is
  respawned, unless the supervisor itself is stopping.
- Over the *soft* memory limit a child is asked to recycle: it finishes its current
  task, releases the rest and exits. Over the *hard* limit it is killed at once.
- A child that crashes again and again (an import error, a broken broker URL) is
  respawned with growing delays instead of in a tight loop.
"""

from __future__ import annotations

import enum
import math
import re
from typing import Any

import attrs

from sergeant._numbers import finite_number
from sergeant.config import MAX_SECONDS
from sergeant.errors import ConfigError


class StopReason(enum.Enum):
    """Why a worker's ``run()`` returned; a worker process exits with its code."""

    STOPPED = "stopped"
    """Asked to stop (by a task, a signal or ``request_stop``): do not respawn."""
    RESPAWN = "respawn"
    """A task asked for a fresh process: respawn."""
    MAX_TASKS = "max_tasks"
    """``max_tasks_per_run`` reached: respawn."""
    RECYCLE = "recycle"
    """Over the soft memory limit: finished its task and left; respawn."""

    @property
    def exit_code(self) -> int:
        """The process exit code that carries this reason to the supervisor."""
        return _EXIT_CODES[self]

    @classmethod
    def from_exit_code(cls, code: int | None) -> StopReason | None:
        """The reason a child exited with ``code``; None for a crash or a kill."""
        return _BY_EXIT_CODE.get(code) if code is not None else None


_EXIT_CODES = {
    StopReason.STOPPED: 0,
    StopReason.RESPAWN: 3,
    StopReason.MAX_TASKS: 4,
    StopReason.RECYCLE: 5,
}
_BY_EXIT_CODE = {code: reason for reason, code in _EXIT_CODES.items()}


class MemoryVerdict(enum.Enum):
    """What to do with a child after reading its memory use."""

    OK = "ok"
    RECYCLE = "recycle"
    KILL = "kill"


class ExitVerdict(enum.Enum):
    """What to do after a child exited."""

    RESPAWN = "respawn"
    RETIRE = "retire"


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*((?:[KMGT]i?)?B?)\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """Bytes in a size like ``512MiB``, ``1.5GB``, ``800M`` or ``1048576``.

    Raises:
        ConfigError: the text is not a size.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        if text <= 0:
            raise ConfigError(f"size must be > 0 bytes, got {text}")
        return text
    match = _SIZE.match(str(text))
    if not match:
        raise ConfigError(f"not a size: {text!r} (try 512MiB, 2GB or 1048576)")
    number, unit = float(match.group(1)), (match.group(2) or "").upper()
    letter = unit.replace("I", "").replace("B", "")
    power = "KMGT".index(letter) + 1 if letter else 0
    scaled = number * (1024 if "I" in unit else 1000) ** power
    if not math.isfinite(scaled) or scaled >= 2**63:
        raise ConfigError(f"size too large: {text!r}")
    if not power and not number.is_integer():
        raise ConfigError(f"size in bytes must be whole, got {text!r}")
    size = int(scaled)
    if size <= 0:
        raise ConfigError(f"size must be > 0 bytes, got {text!r}")
    return size


def _optional_size(value: Any) -> int | None:
    return None if value is None else parse_size(value)


@attrs.frozen(kw_only=True)
class SupervisionPolicy:
    """How a supervisor treats its worker processes.

    Attributes:
        workers: how many worker processes to keep running.
        soft_memory: RSS in bytes (or a size string) over which a worker is asked to
            finish its task and exit; None disables.
        hard_memory: RSS over which a worker is killed at once; None disables.
        stop_grace: seconds a stopping worker may take before it is killed.
        crash_backoff_base: first respawn delay after a crash, in seconds.
        crash_backoff_max: the cap of that delay.
        crash_window: a child that lived less than this many seconds counts as a
            rapid crash; the delay grows with consecutive rapid crashes.
    """

    workers: int = 1
    soft_memory: int | None = attrs.field(default=None, converter=_optional_size)
    hard_memory: int | None = attrs.field(default=None, converter=_optional_size)
    stop_grace: float = 30.0
    crash_backoff_base: float = 0.5
    crash_backoff_max: float = 30.0
    crash_window: float = 5.0

    def __attrs_post_init__(self) -> None:
        if isinstance(self.workers, bool) or not isinstance(self.workers, int):
            raise ConfigError("SupervisionPolicy.workers must be an integer")
        if self.workers < 1:
            raise ConfigError(
                f"SupervisionPolicy.workers must be >= 1, got {self.workers}"
            )
        for field in ("stop_grace", "crash_backoff_base", "crash_backoff_max",
                      "crash_window"):  # fmt: skip
            value = getattr(self, field)
            if not finite_number(value):
                raise ConfigError(
                    f"SupervisionPolicy.{field} must be a finite number, got {value!r}"
                )
            if value < 0:
                raise ConfigError(f"SupervisionPolicy.{field} must be >= 0")
            if value > MAX_SECONDS:
                raise ConfigError(
                    f"SupervisionPolicy.{field} must be <= {MAX_SECONDS:g} s (ten "
                    f"years), got {value!r}"
                )
        if (
            self.soft_memory is not None
            and self.hard_memory is not None
            and self.soft_memory >= self.hard_memory
        ):
            raise ConfigError(
                "SupervisionPolicy.soft_memory must be below hard_memory "
                f"({self.soft_memory} >= {self.hard_memory} bytes)"
            )

    def on_memory(self, rss: int) -> MemoryVerdict:
        """The verdict for a child using ``rss`` bytes."""
        if self.hard_memory is not None and rss > self.hard_memory:
            return MemoryVerdict.KILL
        if self.soft_memory is not None and rss > self.soft_memory:
            return MemoryVerdict.RECYCLE
        return MemoryVerdict.OK

    def on_exit(self, exit_code: int | None, *, stopping: bool) -> ExitVerdict:
        """Respawn or retire a child that exited with ``exit_code``."""
        if stopping or StopReason.from_exit_code(exit_code) is StopReason.STOPPED:
            return ExitVerdict.RETIRE
        return ExitVerdict.RESPAWN

    def is_crash(self, exit_code: int | None) -> bool:
        """Whether ``exit_code`` is not one of the worker's deliberate exits."""
        return StopReason.from_exit_code(exit_code) is None

    def backs_off(self, exit_code: int | None, *, lifetime: float) -> bool:
        """Whether this exit counts toward the respawn back-off: a crash, or a
        memory recycle, within ``crash_window`` of the start.

        A worker whose start-up alone passes ``soft_memory`` is recycled as soon
        as it starts; respawned at once each time, it would loop.
        """
        if lifetime >= self.crash_window:
            return False
        reason = StopReason.from_exit_code(exit_code)
        return reason is None or reason is StopReason.RECYCLE

    def respawn_delay(self, *, rapid_crashes: int) -> float:
        """Seconds to wait before respawning after ``rapid_crashes`` in a row."""
        if rapid_crashes <= 0:
            return 0.0
        delay = self.crash_backoff_base * 2 ** min(rapid_crashes - 1, 32)
        return float(min(self.crash_backoff_max, delay))
