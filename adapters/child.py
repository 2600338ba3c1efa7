"""The worker process entry point the supervisor starts: one worker per process.

``python -m sergeant.adapters.child package.module:attr --owner OWNER`` imports
``attr``, a callable taking ``owner=`` and returning a ``Worker`` (a factory
function, or a ``Worker`` subclass whose ``__init__`` composes its own adapters),
runs it and exits with the ``StopReason``'s exit code, which is how the supervisor
learns why a child left.

Signals: SIGTERM and SIGINT ask for a graceful stop (the running task finishes, the
reserved but unstarted ones are released); SIGUSR1 asks for a recycle (the same, but
the supervisor respawns the process). A setup error (cannot import the target, it
is not callable, it raised, it did not return a worker) is one line on stderr and
exit code ``SETUP_ERROR``. A child whose parent disappears stops by itself, so a
killed supervisor does not leave orphans consuming the queue.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from sergeant.errors import ConfigError, SergeantError
from sergeant.event_log import EventLogger
from sergeant.supervision import StopReason
from sergeant.worker import Worker

#: Exit code of a child that could not build its worker (sysexits' EX_CONFIG).
SETUP_ERROR = 78
#: Exit code of a child whose worker loop raised (sysexits' EX_SOFTWARE).
CRASHED = 70

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
WorkerFactory = Callable[..., Worker]

logger = logging.getLogger("sergeant.child")


def load_target(spec: str) -> WorkerFactory:
    """The callable named by ``"package.module:attr"`` (``attr`` may be dotted).

    Raises:
        ConfigError: the spec is malformed, the module cannot be imported or
            raised while importing, the attribute is missing or not callable.
            The message is one line.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"worker target must look like 'package.module:attr', got {spec!r}"
        )
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"cannot import {module_name!r}: {error}") from error
    except Exception as error:  # the user's module raised while being imported
        raise ConfigError(
            f"importing {module_name!r} failed: {type(error).__name__}: {error}"
        ) from error
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(f"{module_name!r} has no attribute {attr!r}") from None
    if not callable(target):
        raise ConfigError(f"worker target {spec!r} is not callable")
    factory: WorkerFactory = target
    return factory


def build_worker(target: str | WorkerFactory, *, owner: str) -> Worker:
    """Load ``target`` if it is a spec string and call it with ``owner=``.

    Raises:
        SergeantError: what the factory raised if it is one (a ``ConfigError``
            from a ``WorkerConfig``, a ``BrokerError``), else a ``ConfigError``
            saying what went wrong, in one line.
    """
    factory = load_target(target) if isinstance(target, str) else target
    name = target if isinstance(target, str) else getattr(target, "__name__", target)
    try:
        worker = factory(owner=owner)
    except SergeantError:
        raise
    except Exception as error:
        raise ConfigError(
            f"{name}(owner=...) failed: {type(error).__name__}: {error}"
        ) from error
    if not isinstance(worker, Worker):
        raise ConfigError(
            f"{name}(owner=...) returned {type(worker).__name__}, not a Worker"
        )
    return worker


#: Modules of the brokers reached over a network, where others may write payloads.
NETWORK_BROKERS = ("sergeant.adapters.redis", "sergeant.adapters.mongo")


def unsigned_pickle_warning(worker: Worker) -> str | None:
    """A warning when ``worker`` unpickles unsigned payloads from a network broker.

    Unpickling runs code chosen by whoever wrote the payload, and anyone who can
    reach a Redis or MongoDB server can write one. The composition is only
    visible once the target built its worker, so the check lives here, not in
    the command line. Returns None when the codec signs, is not pickle, or the
    broker is local (SQLite, memory).
    """
    layers = worker.codec.name.split("+")
    # The class or any base: an application's subclass of RedisBroker counts too.
    modules = [cls.__module__ for cls in type(worker.broker).__mro__]
    network = any(m.startswith(prefix) for m in modules for prefix in NETWORK_BROKERS)
    if "pickle" not in layers or "hmac" in layers or not network:
        return None
    return (
        f"worker {worker.config.name!r} decodes unsigned pickle ({worker.codec.name})"
        f" from a network broker ({type(worker.broker).__name__}): anyone who can "
        "write to it can run code in this process. Sign the payloads: "
        "HmacSigner(PickleCodec(), key=...), e.g. HmacSigner.from_env(PickleCodec())"
    )


class StopSignals:
    """SIGTERM/SIGINT: graceful stop; SIGUSR1: recycle (stop, to be respawned).

    Installed before the worker is built, so that: a recycle request arriving
    during start-up (heavy imports, a factory that allocates) is kept for the
    worker rather than killing the process (SIGUSR1's default action), which the
    supervisor would count as a crash, while a stop request ends the process at
    once (exit ``STOPPED``); and a ``ProcessWatchdog`` started by the
    factory finds these handlers in place and passes on every SIGINT that is not
    its own, instead of being replaced by them afterwards (its timeouts would
    then stop the worker instead of the task).
    """

    def __init__(self) -> None:
        self._worker: Worker | None = None
        self._pending: list[StopReason] = []

    def install(self) -> None:
        """Take SIGTERM, SIGINT and SIGUSR1 from now on."""
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGUSR1, self._recycle)

    def attach(self, worker: Worker) -> None:
        """Hand requests to ``worker`` from now on, those received so far first."""
        self._worker = worker
        for reason in self._pending:
            worker.request_stop(reason)
        self._pending.clear()

    def _request(self, reason: StopReason) -> None:
        if self._worker is not None:
            self._worker.request_stop(reason)
        elif reason is StopReason.STOPPED:
            # Nothing to finish yet, and a factory may hang (a broker that does
            # not answer): a stop ends the process now, as SIGTERM always did.
            raise SystemExit(reason.exit_code)
        else:
            self._pending.append(reason)

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self._request(StopReason.STOPPED)

    def _recycle(self, signum: int, frame: FrameType | None) -> None:
        self._request(StopReason.RECYCLE)


def watch_parent(worker: Worker, parent: int, *, every: float = 1.0) -> None:
    """Stop ``worker`` gracefully once process ``parent`` is no longer our parent.

    When the supervisor is SIGKILLed its children are re-parented; without this
    they would go on consuming the queue unsupervised.
    """

    def loop() -> None:
        while not worker.stopping:
            if os.getppid() != parent:
                logger.warning("supervisor (pid %d) is gone: stopping", parent)
                worker.request_stop(StopReason.STOPPED)
                return
            time.sleep(every)

    threading.Thread(target=loop, name="sergeant-parent-watch", daemon=True).start()


def _close(worker: Worker) -> None:
    """Free the worker's executor, watchdog and broker; failures are only logged."""
    for name, close in (
        ("executor", worker.executor.shutdown),
        ("watchdog", worker.watchdog.close),
        ("broker", worker.broker.close),
    ):
        try:
            close()
        except Exception:
            logger.warning("closing the %s failed", name, exc_info=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sergeant.adapters.child",
        description="Run one sergeant worker in this process (started by the "
        "supervisor).",
    )
    parser.add_argument("target", help="package.module:attr returning a Worker")
    parser.add_argument("--owner", required=True, help="name the leases are held by")
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
    )
    parser.add_argument(
        "--parent", type=int, default=None, help="stop when this pid is gone"
    )
    parser.add_argument(
        "--no-event-log",
        action="store_true",
        help="do not log lifecycle events (the factory logs them itself)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Build the worker, run it, return the exit code that tells why it stopped."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format=LOG_FORMAT)
    signals = StopSignals()
    signals.install()  # before the target runs: see StopSignals
    try:
        worker = build_worker(args.target, owner=args.owner)
    except SergeantError as error:
        print(f"sergeant worker: {error}", file=sys.stderr)
        logger.debug("worker setup failed", exc_info=True)
        return SETUP_ERROR
    warning = unsigned_pickle_warning(worker)
    if warning is not None:
        logging.getLogger("sergeant.security").warning("%s", warning)
    if not args.no_event_log:
        EventLogger(worker)
    signals.attach(worker)
    if args.parent is not None:
        watch_parent(worker, args.parent)
    try:
        reason = worker.run()
    except Exception:
        logger.exception("worker %s crashed", worker.config.name)
        return CRASHED
    finally:
        _close(worker)
    return reason.exit_code


if __name__ == "__main__":
    sys.exit(main())
