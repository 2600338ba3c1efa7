"""Our Redis broker against the original sergeant 0.27.0, same server, same run.

Run from the repository root::

    python -m benchmark.redis [--tasks 100000] [--single-tasks 10000] [--repeat 3]
                              [--baseline PYTHON [--baseline-prefetch]]

It starts its own redis-server, installs sergeant 0.27.0 into
``benchmark/.venvs/sergeant027`` (once), and measures, interleaved (ours
at-least-once, ours at-most-once, 0.27, then the next row): push one by one,
push in bulk, drain one at a time and in batches of 1,000 (reserve + decode + a
no-op + ack; ours at least once also with ``WorkerConfig(prefetch=2)``, a
column of its own), then the wake-up latency of an idle worker and its CPU time while
idle. Each number is the median of the repeats; the ratios are ours / 0.27,
checked against the targets of the Redis broker's issue. With several repeats a
ratio is followed by its range over them (each repeat's ratio pairs runs made
back to back), and a verdict by how many repeats met the target: on a shared
machine a median alone can land on either side of a target by chance.
``python -m benchmark`` runs this and the comparison with the other peers.

``--baseline PYTHON`` adds another build of ours, interleaved in the same rows: the
driver runs under that interpreter, whose environment provides the library (for
example a venv with an older checkout installed by ``pip install -e``). A second
table then gives ours / baseline per row: a before/after of a change, measured
against one server in one run. ``--baseline-prefetch`` adds the baseline's
prefetch run to the drain rows (for builds that have ``WorkerConfig.prefetch`` as
a depth).
"""

from __future__ import annotations

import argparse
import functools
import math
from collections.abc import Callable

from . import _table
from ._redis_server import RedisServer, run_cli
from ._runner import ROWS, SINGLE_ROWS, Contender, Runner
from ._venvs import OURS, SERGEANT027, Lib, ensure

SECTION = "redis"
ALO = Contender("ours", "ours, at-least-once", OURS)
AMO = Contender("ours_amo", "ours, at-most-once", OURS, "at_most_once")
# WorkerConfig(prefetch=2): two batches are reserved ahead of the running one.
PREFETCH_DEPTH = 2
PREFETCH = Contender(
    "ours_pf",
    f"ours, at-least-once, prefetch={PREFETCH_DEPTH}",
    OURS,
    f"at_least_once+prefetch={PREFETCH_DEPTH}",
)
OLD = Contender("sergeant027", "sergeant 0.27.0", SERGEANT027)


def baselines(python: str) -> tuple[Contender, Contender, Contender]:
    """The at-least-once, at-most-once and prefetch contenders of a baseline."""
    lib = Lib("ours", "baseline build", interpreter=python)
    return (
        Contender("baseline", "baseline, at-least-once", lib),
        Contender("baseline_amo", "baseline, at-most-once", lib, "at_most_once"),
        Contender(
            "baseline_pf",
            f"baseline, at-least-once, prefetch={PREFETCH_DEPTH}",
            lib,
            PREFETCH.delivery,
        ),
    )


# Targets from the issue: row -> (contender key, minimum ratio ours / 0.27).
TARGETS: dict[str, list[tuple[str, float]]] = {
    "push_single": [("ours", 1.0)],
    "push_bulk": [("ours", 2.0)],
    "drain_1": [("ours", 1.0)],
    "drain_1000": [("ours", 1.2), ("ours_amo", 2.0)],
}
P99_TARGET_MS = 5.0
IDLE_CPU_LIMIT_MS = 20.0  # 1% of one core over the 2 s sample: "no busy polling"


def measure(
    runner: Runner,
    *,
    tasks: int,
    single_tasks: int,
    repeat: int,
    latency_tasks: int,
    rate: float,
    with_old: bool = True,
    baseline: str | None = None,
    baseline_prefetch: bool = False,
) -> None:
    """Run every row ``repeat`` times, contenders interleaved within each row.

    ``with_old=False`` leaves sergeant 0.27.0 out (no venv needed): the ratio
    columns then stay empty. ``baseline`` (a Python) adds that build of ours;
    ``baseline_prefetch`` also runs it with prefetch (a build that has it).
    """
    old = (OLD,) if with_old else ()
    base_alo, base_amo, base_pf = (
        baselines(baseline) if baseline else (None, None, None)
    )
    if not baseline_prefetch:
        base_pf = None
    for turn in range(repeat):
        runner.turn = turn
        runner.log(f"[redis vs 0.27] repeat {turn + 1}/{repeat}")
        for row in ROWS:
            count = single_tasks if row in SINGLE_ROWS else tasks
            # Pushing does not depend on the delivery mode: one "ours" push row.
            drain = row.startswith("drain")
            contenders = (
                [ALO, base_alo, PREFETCH, base_pf, AMO, base_amo]
                if drain
                else [ALO, base_alo]
            )
            for who in [*contenders, *old]:
                if who is not None:
                    runner.measure(SECTION, who, row, count)
        for who in (ALO, *old):
            runner.measure(SECTION, who, "latency", latency_tasks, rate=rate)


def _verdict(
    value: float, ok: Callable[[float], bool], per_repeat: list[float] | None = None
) -> str:
    """Met or missed by the median; with repeats, in how many of them it was met."""
    if math.isnan(value):
        return "not measured"
    verdict = "met" if ok(value) else "**missed**"
    if per_repeat is not None and len(per_repeat) > 1:
        verdict += f" (met in {sum(map(ok, per_repeat))} of {len(per_repeat)} repeats)"
    return verdict


def report(runner: Runner) -> str:
    """The section's markdown: throughput, ratios and targets, then latency."""
    med = runner.median
    rows = []
    for row, (_, _, label) in ROWS.items():
        alo, old = med(SECTION, "ours", row), med(SECTION, "sergeant027", row)
        drain = row.startswith("drain")
        amo = med(SECTION, "ours_amo", row) if drain else alo
        pf = med(SECTION, "ours_pf", row) if drain else math.nan
        # Per repeat: ours / 0.27 measured back to back in the same turn.
        turns = {
            key: runner.ratios(SECTION, key, "sergeant027", row)
            for key in ("ours", "ours_amo", "ours_pf")
        }
        if not drain:  # one push row serves both modes
            turns["ours_amo"] = turns["ours"]
        goals = []
        for key, minimum in TARGETS[row]:
            got = (alo if key == "ours" else amo) / old
            mode = "ALO" if key == "ours" else "AMO"
            enough = lambda g, m=minimum: g >= m  # noqa: E731 - used twice
            per_repeat = turns["ours" if key == "ours" else "ours_amo"]
            goal = f"{mode} ≥ {minimum:.1f}x: {_verdict(got, enough, per_repeat)}"
            if key == "ours" and drain:
                goal += f" (prefetch: {_verdict(pf / old, enough, turns['ours_pf'])})"
            goals.append(goal)
        rows.append(
            [
                label,
                f"{runner.tasks(SECTION, 'ours', row):,}",
                _table.rate(alo),
                _table.rate(pf) if drain else "",
                _table.rate(amo),
                _table.rate(old),
                _table.ratio(alo, old, turns["ours"]),
                _table.ratio(pf, old, turns["ours_pf"]) if drain else "",
                _table.ratio(amo, old, turns["ours_amo"]),
                "; ".join(goals),
            ]
        )
    throughput = _table.table(
        [
            "tasks/s (median)",
            "tasks",
            "ours ALO",
            f"ours ALO prefetch={PREFETCH_DEPTH}",
            "ours AMO",
            "sergeant 0.27",
            "ALO / 0.27",
            "prefetch / 0.27",
            "AMO / 0.27",
            "target",
        ],
        rows,
    )
    text = throughput + "\n\n" + _latency_table(runner)
    if runner.tasks(SECTION, "baseline", "push_bulk"):
        text += "\n\n" + _baseline_table(runner)
    return text


def _baseline_table(runner: Runner) -> str:
    """Ours against the baseline build, per row and delivery mode."""
    med = runner.median
    with_pf = bool(runner.tasks(SECTION, "baseline_pf", "drain_1000"))
    turns = functools.partial(runner.ratios, SECTION)  # per repeat: ours / baseline
    rows = []
    for row, (_, _, label) in ROWS.items():
        drain = row.startswith("drain")
        alo, base = med(SECTION, "ours", row), med(SECTION, "baseline", row)
        amo = med(SECTION, "ours_amo", row) if drain else alo
        base_amo = med(SECTION, "baseline_amo", row) if drain else base
        alo_turns = turns("ours", "baseline", row)
        cells = [
            label,
            _table.rate(base),
            _table.rate(alo),
            _table.ratio(alo, base, alo_turns),
            _table.rate(base_amo),
            _table.rate(amo),
            _table.ratio(
                amo,
                base_amo,
                turns("ours_amo", "baseline_amo", row) if drain else alo_turns,
            ),
        ]
        if with_pf:
            pf = med(SECTION, "ours_pf", row) if drain else math.nan
            base_pf = med(SECTION, "baseline_pf", row) if drain else math.nan
            cells += (
                [
                    _table.rate(base_pf),
                    _table.rate(pf),
                    _table.ratio(pf, base_pf, turns("ours_pf", "baseline_pf", row)),
                ]
                if drain
                else ["", "", ""]
            )
        rows.append(cells)
    header = [
        "tasks/s (median)",
        "baseline ALO",
        "ours ALO",
        "ALO ours / baseline",
        "baseline AMO",
        "ours AMO",
        "AMO ours / baseline",
    ]
    if with_pf:
        header += [
            "baseline prefetch",
            "ours prefetch",
            "prefetch ours / baseline",
        ]
    return _table.table(header, rows)


def _latency_table(runner: Runner) -> str:
    med = runner.median
    ours = {f: med(SECTION, "ours", "latency", f) for f in ("p50_ms", "p99_ms")}
    old = {f: med(SECTION, "sergeant027", "latency", f) for f in ("p50_ms", "p99_ms")}
    idle = med(SECTION, "ours", "latency", "idle_cpu_ms")
    idle_old = med(SECTION, "sergeant027", "latency", "idle_cpu_ms")
    count = runner.tasks(SECTION, "ours", "latency")
    rows = [
        [
            "push to start, p50 (ms)",
            _table.ms(ours["p50_ms"]),
            _table.ms(old["p50_ms"]),
            "",
        ],
        [
            "push to start, p99 (ms)",
            _table.ms(ours["p99_ms"]),
            _table.ms(old["p99_ms"]),
            f"p99 ≤ {P99_TARGET_MS:.0f} ms: "
            + _verdict(ours["p99_ms"], lambda v: v <= P99_TARGET_MS),
        ],
        [
            "idle worker CPU over 2 s (ms)",
            _table.ms(idle),
            _table.ms(idle_old),
            f"no busy polling (≤ {IDLE_CPU_LIMIT_MS:.0f} ms): "
            + _verdict(idle, lambda v: v <= IDLE_CPU_LIMIT_MS),
        ],
    ]
    header = [
        f"idle worker, {count} tasks pushed one by one (median)",
        "ours ALO",
        "sergeant 0.27",
        "target",
    ]
    return _table.table(header, rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared with ``python -m benchmark``."""
    parser.add_argument(
        "--tasks",
        type=int,
        default=100_000,
        help="tasks per bulk/batch row (default 100,000)",
    )
    parser.add_argument(
        "--single-tasks",
        type=int,
        default=None,
        help="tasks per one-by-one row (default: tasks / 10)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs per row; tables show the median (default 3)",
    )
    parser.add_argument(
        "--latency-tasks",
        type=int,
        default=200,
        help="tasks pushed to an idle worker (default 200)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=100.0,
        help="pushes per second in latency runs (default 100)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def main(argv: list[str] | None = None) -> None:
    """Measure and print this section alone."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_arguments(parser)
    parser.add_argument(
        "--baseline",
        metavar="PYTHON",
        help="also run the build of ours that this interpreter's environment has "
        "installed (e.g. an older checkout), interleaved; adds ours / baseline",
    )
    parser.add_argument(
        "--baseline-prefetch",
        action="store_true",
        help=f"also run the baseline build with prefetch={PREFETCH_DEPTH} in the "
        "drain rows (a build that has WorkerConfig.prefetch as a number)",
    )
    args = parser.parse_args(argv)
    ensure(SERGEANT027)
    server = RedisServer.started()
    try:
        runner = Runner(server, verbose=not args.quiet)
        measure(
            runner,
            tasks=args.tasks,
            single_tasks=args.single_tasks or max(1, args.tasks // 10),
            repeat=args.repeat,
            latency_tasks=args.latency_tasks,
            rate=args.rate,
            baseline=args.baseline,
            baseline_prefetch=args.baseline_prefetch,
        )
    finally:
        server.stop()
    print(report(runner))
    if runner.errors:
        raise SystemExit("errors:\n" + "\n".join(runner.errors))


if __name__ == "__main__":
    run_cli(main)
