"""The ``sergeant`` command: supervise workers, inspect queues, run the demo.

A driving adapter over the supervisor and any broker named by URL::

    sergeant supervise package.module:attr --workers 4 --max-memory 512MiB
    sergeant queues --broker sqlite:///jobs.db
    sergeant purge QUEUE --broker URL
    sergeant dead QUEUE --broker URL [--limit N] [--replay]
    sergeant demo [--tasks 20000] [--workers 2] [--path FILE]

Exit codes: 0 success; 1 a runtime failure (unreachable or invalid broker, a
target that fails to build its worker), one line on stderr; 2 a usage error, with
a message naming the argument (argparse's convention, kept for our own checks);
130 interrupted. User mistakes never print a traceback.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sergeant.config import MAX_SECONDS
from sergeant.errors import BrokerError, ConfigError, SergeantError
from sergeant.protocols import Broker, SupportsInspection
from sergeant.supervision import SupervisionPolicy, parse_size

from .registry import broker_from_url, redact

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
BROKER_VARIABLE = "SERGEANT_BROKER"


# -- argument types: a bad value exits 2 with "argument --name: <why>" ------------


# The largest count an option takes (workers, a listing's limit): beyond it a
# backend refuses the number itself, after the command has started.
_MAX_COUNT = 10**9


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    if value > _MAX_COUNT:
        raise argparse.ArgumentTypeError(f"must be <= {_MAX_COUNT:,}, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value < math.inf:  # also rejects nan
        raise argparse.ArgumentTypeError(
            f"must be a finite number >= 0 of seconds, got {text}"
        )
    if value > MAX_SECONDS:
        raise argparse.ArgumentTypeError(
            f"must be at most {MAX_SECONDS:g} seconds (ten years), got {text}"
        )
    return value


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _target(text: str) -> str:
    module, sep, attr = text.partition(":")
    if not (sep and module and attr):
        raise argparse.ArgumentTypeError(
            f"must look like package.module:WorkerClass, got {text!r}"
        )
    return text


# -- commands ------------------------------------------------------------------------


def _supervise(args: argparse.Namespace) -> int:
    from .child import load_target  # noqa: PLC0415 - with the supervisor's imports
    from .supervisor import Supervisor  # noqa: PLC0415 - psutil only when needed

    parser: argparse.ArgumentParser = args.parser
    soft, hard = args.soft_memory, args.max_memory
    if soft is not None and hard is not None and soft >= hard:
        parser.error(
            f"argument --soft-memory: must be below --max-memory ({soft} >= {hard} "
            "bytes)"
        )
    policy = SupervisionPolicy(
        workers=args.workers,
        soft_memory=soft,
        hard_memory=hard,
        stop_grace=args.stop_grace,
    )
    # Import the target as the children will: from the working directory.
    sys.path.insert(0, os.getcwd())
    try:
        load_target(args.target)
    except ConfigError as error:  # no such module or attribute: a usage error
        parser.error(f"argument TARGET: {error}")
    # Building the worker may fail at run time (its factory raised, its broker is
    # unreachable): main() reports that as a runtime failure, exit 1.
    supervisor = Supervisor(args.target, policy, log_level=args.log_level)
    supervisor.run()
    return 0


def _open_broker(url: str | None, parser: argparse.ArgumentParser) -> Broker:
    if not url:
        parser.error(f"argument --broker: required (or set ${BROKER_VARIABLE})")
    try:
        scheme = urlsplit(url).scheme
    except ValueError as error:  # e.g. an unclosed IPv6 bracket
        raise ConfigError(f"malformed broker URL {redact(url)!r}: {error}") from None
    if scheme == "sqlite":
        from .sqlite import parse_url  # noqa: PLC0415 - only for sqlite URLs

        path, _ = parse_url(url)
        if not Path(path).is_file():
            # Opening would create an empty database and report nothing.
            raise BrokerError(f"no SQLite database at {path!r} ({redact(url)})")
    return broker_from_url(url)


def _inspection(broker: Broker, url: str) -> SupportsInspection:
    if not isinstance(broker, SupportsInspection):
        raise BrokerError(
            f"{type(broker).__name__} ({redact(url)}) cannot list queues or dead "
            "letters"
        )
    return broker


def _queues(args: argparse.Namespace) -> int:
    broker = _open_broker(args.broker, args.parser)
    try:
        names = args.queues or _inspection(broker, args.broker).queues()
        rows = [(name, broker.lengths(name)) for name in names]
    finally:
        broker.close()
    table = [("queue", "ready", "delayed", "in flight", "dead")]
    table += [
        (name, f"{n.ready:,}", f"{n.delayed:,}", f"{n.in_flight:,}", f"{n.dead:,}")
        for name, n in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    for row in table:
        cells = [row[0].ljust(widths[0])]
        cells += [
            cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells).rstrip())
    if not rows:
        print("(no queues)")
    return 0


def _purge(args: argparse.Namespace) -> int:
    broker = _open_broker(args.broker, args.parser)
    try:
        count = broker.purge(args.queue)
        print(f"purged {count:,} tasks from {args.queue!r}")
        if args.dead:
            dead = _inspection(broker, args.broker).purge_dead(args.queue)
            print(f"purged {dead:,} dead letters from {args.queue!r}")
    finally:
        broker.close()
    return 0


def _dead(args: argparse.Namespace) -> int:
    broker = _open_broker(args.broker, args.parser)
    try:
        store = _inspection(broker, args.broker)
        if args.replay:
            count = store.replay_dead(args.queue, limit=args.limit)
            print(f"replayed {_dead_letters(count)} into {args.queue!r}")
            return 0
        letters = store.dead_letters(args.queue, limit=args.limit or 100)
        total = broker.lengths(args.queue).dead
    finally:
        broker.close()
    shown = "oldest first" if total <= len(letters) else f"the oldest {len(letters):,}"
    print(f"{_dead_letters(total)} in {args.queue!r} ({shown})")
    for letter in letters:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(letter.dead_at))
        reason = " ".join(letter.reason.splitlines())
        print(f"{when}  {reason}  [{len(letter.payload)} bytes]")
    return 0


def _dead_letters(count: int) -> str:
    return f"{count:,} dead letter{'' if count == 1 else 's'}"


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo  # noqa: PLC0415 - psutil and sqlite only when needed

    return run_demo(
        tasks=args.tasks, workers=args.workers, path=args.path, out=sys.stdout
    )


# -- the parser ----------------------------------------------------------------------


def _add(
    commands: Any,
    name: str,
    handler: Callable[[argparse.Namespace], int],
    text: str,
    *,
    log_level: str = "ERROR",
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=text, description=text
    )
    parser.set_defaults(handler=handler, parser=parser)
    parser.add_argument(
        "--log-level",
        default=log_level,
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help=f"logging level (default {log_level})",
    )
    return parser


def _broker_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--broker",
        default=os.environ.get(BROKER_VARIABLE),
        metavar="URL",
        help="sqlite:///file.db, redis://host, mongodb://host/db, ... "
        f"(default ${BROKER_VARIABLE})",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``sergeant`` command."""
    parser = argparse.ArgumentParser(
        prog="sergeant", description="Fast, safe and simple distributed task queues."
    )
    try:
        version = metadata.version("sergeant")
    except metadata.PackageNotFoundError:  # pragma: no cover - not installed
        version = "unknown"
    parser.add_argument("--version", action="version", version=f"sergeant {version}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    sup = _add(
        commands,
        "supervise",
        _supervise,
        "run and supervise worker processes",
        log_level="INFO",
    )
    sup.add_argument(
        "target",
        type=_target,
        metavar="TARGET",
        help="package.module:WorkerClass (or a factory taking owner=)",
    )
    sup.add_argument(
        "--workers", type=_positive_int, default=1, metavar="N",
        help="worker processes (default 1)",
    )  # fmt: skip
    sup.add_argument(
        "--max-memory",
        type=_size,
        metavar="SIZE",
        help="kill a worker whose RSS exceeds this (e.g. 512MiB)",
    )
    sup.add_argument(
        "--soft-memory",
        type=_size,
        metavar="SIZE",
        help="recycle a worker over this, after its current task",
    )
    sup.add_argument(
        "--stop-grace",
        type=_seconds,
        default=30.0,
        metavar="S",
        help="seconds a stopping worker may take (default 30)",
    )

    queues = _add(commands, "queues", _queues, "show task counts per queue")
    queues.add_argument("queues", nargs="*", metavar="QUEUE", help="default: all")
    _broker_option(queues)

    purge = _add(commands, "purge", _purge, "drop a queue's pending tasks")
    purge.add_argument("queue", metavar="QUEUE")
    purge.add_argument("--dead", action="store_true", help="drop its dead letters too")
    _broker_option(purge)

    dead = _add(commands, "dead", _dead, "list (or replay) a queue's dead letters")
    dead.add_argument("queue", metavar="QUEUE")
    dead.add_argument(
        "--limit",
        type=_positive_int,
        metavar="N",
        help="at most N (listing default 100; replay default all)",
    )
    dead.add_argument(
        "--replay",
        action="store_true",
        help="push them back to the queue as ready tasks",
    )
    _broker_option(dead)

    demo = _add(
        commands,
        "demo",
        _demo,
        "drain a batch of demo tasks in SQLite",
        log_level="INFO",
    )
    demo.add_argument("--tasks", type=_positive_int, default=20_000, metavar="N")
    demo.add_argument("--workers", type=_positive_int, default=2, metavar="N")
    demo.add_argument(
        "--path", metavar="FILE", help="SQLite file to use (default: a temporary one)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sergeant`` command; return its exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format=LOG_FORMAT, stream=sys.stderr)
    try:
        code: int = args.handler(args)
    except KeyboardInterrupt:
        print("sergeant: interrupted", file=sys.stderr)
        return 130
    except SergeantError as error:
        print(f"sergeant: error: {' '.join(str(error).splitlines())}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
