"""``python -m benchmark``: sergeant against its peers, in one run, with a chart.

Sections (all by default, ``--sections`` picks some):

- ``redis``: ours (at-least-once and at-most-once) against the original sergeant
  0.27.0: push one by one and in bulk, drain one at a time and in batches of
  1,000, idle wake-up latency and idle CPU; ratios against the issue's targets.
- ``peers``: the same rows for Celery, RQ, Dramatiq and Huey, each interleaved
  with ours; latency p50/p99 at a fixed push rate.
- ``floor``: redis-benchmark LPUSH/RPOP (one client, plain and pipelined) and
  the time to encode/decode the tasks alone (1,000 per call), and a bare loop.
- ``scaling``: ours with 1, 2, 4 worker processes on 1 and 3 Redis nodes, and
  on the SQLite and memory brokers.

Each number is the median of ``--repeat`` runs. Every run must drain exactly
what it pushed, or the command exits non-zero (speed is never asserted).
The tables are printed and written to ``benchmark/results/<date>.md`` with a bar
chart ``<date>.png`` (needs matplotlib). ``--quick`` (10,000 tasks, one repeat,
results not written unless ``--out`` is given) is the CI smoke test;
``--ours-only`` skips every venv (no sergeant 0.27.0, no peers).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

from . import _floor, _peers, _report, _scaling
from . import redis as redis_section
from ._redis_server import RedisServer, run_cli
from ._runner import Runner
from ._venvs import ALL, HERE, PEERS, SERGEANT027, ensure

SECTIONS = ("redis", "peers", "floor", "scaling")


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmark",
        description=__doc__.split("\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="See docs/performance.md for the latest results and caveats.",
    )
    redis_section.add_arguments(parser)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 10,000 tasks, 1 repeat, 50 latency tasks",
    )
    parser.add_argument(
        "--ours-only",
        action="store_true",
        help="no venvs: leave out sergeant 0.27.0 and the peers",
    )
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated, from {', '.join(SECTIONS)}",
    )
    parser.add_argument(
        "--peers",
        default=",".join(lib.key for lib in PEERS),
        help="comma-separated peer keys (default: all)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=3.0,
        help="seconds of work a slow peer row is sized to (default 3)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for <date>.md and <date>.png (default "
        "benchmark/results; none with --quick)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.repeat, args.latency_tasks = 10_000, 1, 50
        args.budget = min(args.budget, 1.0)
    elif args.out is None:
        args.out = HERE / "results"
    args.single_tasks = args.single_tasks or max(1, args.tasks // 10)
    args.sections = [s for s in args.sections.split(",") if s]
    unknown = set(args.sections) - set(SECTIONS)
    peers = [p for p in args.peers.split(",") if p]
    unknown |= {p for p in peers if p not in ALL or p in ("ours", "sergeant027")}
    if unknown:
        parser.error(f"unknown section or peer: {', '.join(sorted(unknown))}")
    args.peer_libs = [] if args.ours_only else [ALL[p] for p in peers]
    if args.ours_only and "peers" in args.sections:
        args.sections.remove("peers")
    return args


def run(args: argparse.Namespace, runner: Runner) -> list[str]:
    """Measure the chosen sections; return the report's parts."""
    parts = []
    common = {
        "repeat": args.repeat,
        "latency_tasks": args.latency_tasks,
        "rate": args.rate,
        "tasks": args.tasks,
        "single_tasks": args.single_tasks,
    }
    if "redis" in args.sections:
        redis_section.measure(runner, with_old=not args.ours_only, **common)
        parts.append(
            "## Ours against sergeant 0.27.0 (Redis)\n\n" + redis_section.report(runner)
        )
    if "peers" in args.sections and args.peer_libs:
        _peers.measure(runner, args.peer_libs, budget=args.budget, **common)
        parts.append(
            "## Ours against the peers (Redis, one worker process)\n\n"
            + _peers.report(runner, args.peer_libs)
        )
    if "floor" in args.sections:
        runner.log("[floor]")
        floors = _floor.measure(runner.server, args.tasks, args.repeat)
        parts.append(
            "## The floor on this machine\n\n" + _floor.report(floors, args.tasks)
        )
    if "scaling" in args.sections:
        labels = _scaling.measure(runner, tasks=args.tasks, repeat=args.repeat)
        parts.append("## Scaling (ours)\n\n" + _scaling.report(runner, labels))
    return parts


def main(argv: list[str] | None = None) -> None:
    """Measure, print the tables, write the results, exit 1 on any error."""
    args = parse(argv)
    if not args.ours_only and {"redis", "peers"} & set(args.sections):
        for lib in (SERGEANT027, *args.peer_libs):
            ensure(lib, log=lambda text: print(text, file=sys.stderr, flush=True))
    started = time.monotonic()
    server = RedisServer.started()
    try:
        runner = Runner(server, verbose=not args.quiet)
        parts = run(args, runner)
    finally:
        server.stop()
    minutes = (time.monotonic() - started) / 60
    stamp = datetime.datetime.now(datetime.UTC)
    command = " ".join(
        ["python -m benchmark", *(sys.argv[1:] if argv is None else argv)]
    )
    head = (
        f"# Benchmark results, {stamp:%Y-%m-%d %H:%M} UTC\n\n"
        f"`{command}`"
        f" on commit {_report.commit()}, took {minutes:.1f} min.\n"
        f"Machine: {_report.machine()}.\n"
        f"Tasks: {args.tasks:,} per bulk/batch row, {args.single_tasks:,} per "
        f"one-by-one row, median of {args.repeat} run(s); kwargs "
        f"`{{'url': 'https://example.com/x', 'n': 1}}`."
    )
    text = "\n\n".join([head, *parts])
    if runner.errors:
        text += "\n\n## Errors\n\n" + "\n".join(f"- {e}" for e in runner.errors)
    if args.out is not None and "peers" in args.sections and args.peer_libs:
        args.out.mkdir(parents=True, exist_ok=True)
        name = _report.chart(
            _peers.summary_values(runner, args.peer_libs),
            args.out / f"{stamp:%Y-%m-%d}.png",
        )
        text += (
            f"\n\n![throughput chart]({name})"
            if name
            else ("\n\n(no chart: matplotlib is not installed)")
        )
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{stamp:%Y-%m-%d}.md").write_text(text + "\n")
    print(text)
    if runner.errors:
        print(f"\n{len(runner.errors)} measurement(s) failed", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    run_cli(main)
