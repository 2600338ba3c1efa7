"""The benchmark's quick mode runs end to end: the CI smoke test of ``benchmark/``.

It runs ``python -m benchmark --quick --ours-only`` as a real program: its own
redis-server, our library only (the peer venvs would take minutes to install in
CI), every section that needs no venv (ours against sergeant 0.27.0 with the
0.27.0 columns left empty, the floor, the scaling rows). Speed is never asserted;
the command itself fails when a run errors or drains fewer tasks than it pushed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark import redis as section
from benchmark._redis_server import RedisServer as BenchmarkServer
from benchmark._runner import Runner

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.redis
def test_quick_benchmark_prints_and_writes_its_tables(tmp_path: Path) -> None:
    """The quick benchmark exits 0, prints every section's table and writes it."""
    argv = [sys.executable, "-m", "benchmark", "--quick", "--ours-only", "--quiet",
            "--out", str(tmp_path)]  # fmt: skip

    done = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False
    )

    assert done.returncode == 0, done.stderr[-2000:]
    for heading in (
        "| push, one by one | 1,000 |",
        "| drain, batches of 1,000 | 10,000 |",
        "| push to start, p99 (ms) |",
        "| redis-benchmark LPUSH, 1 client, no pipeline |",
        "| bare loop: LPOP 1,000, pickle.loads, call a no-op |",
        "| Redis, 3 nodes, 4 workers | 10,000 |",
        "| memory (in-process), 1 worker | 10,000 |",
    ):
        assert heading in done.stdout
    written = list(tmp_path.glob("*.md"))
    assert len(written) == 1
    assert "## Scaling (ours)" in written[0].read_text()


@pytest.mark.redis
def test_redis_costs_prints_a_positive_figure_for_every_operation() -> None:
    """``python -m benchmark.redis_costs`` runs and measures each of its rows."""
    argv = [sys.executable, "-m", "benchmark.redis_costs", "--rounds", "1"]

    done = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )

    assert done.returncode == 0, done.stderr[-2000:]
    server_part, client_part, in_lua_part = done.stdout.strip().split("\n\n")
    rows = server_part.splitlines()[1:]
    assert len(rows) == 23
    for row in rows:
        *_, cpu, wall = row.split()
        assert float(cpu.replace(",", "")) > 0, row
        assert float(wall.replace(",", "")) > 0, row
    steps = client_part.splitlines()[1:]
    assert len(steps) == 5
    for row in steps:
        assert float(row.split()[-1].replace(",", "")) > 0, row
    calls = in_lua_part.splitlines()[1:]
    assert len(calls) == 4
    for row in calls:
        assert float(row.split()[-1].replace(",", "")) > 0, row


@pytest.mark.redis
def test_one_at_a_time_prints_a_positive_wall_time_for_every_layer() -> None:
    """``python -m benchmark.one_at_a_time`` runs each of its eight calls."""
    argv = [sys.executable, "-m", "benchmark.one_at_a_time", "--calls", "200",
            "--rounds", "1"]  # fmt: skip

    done = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )

    assert done.returncode == 0, done.stderr[-2000:]
    rows = done.stdout.strip().splitlines()[1:]
    assert len(rows) == 8
    for row in rows:
        *_, cpu, wall = row.split()
        assert float(cpu.replace(",", "")) >= 0, row
        assert float(wall.replace(",", "")) > 0, row


@pytest.mark.slow
@pytest.mark.redis
def test_broker_benchmark_runs_on_one_node_and_on_a_cluster() -> None:
    """``python -m benchmark.broker`` builds its own server and cluster, and each
    prints its eight rows with a rate and the servers' CPU per 1,000 tasks."""
    argv = [sys.executable, "-m", "benchmark.broker", "--brokers",
            "redis,redis-cluster", "--tasks", "200", "--single", "50",
            "--bulk", "50", "--batch", "50"]  # fmt: skip

    done = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False
    )

    assert done.returncode == 0, done.stderr[-2000:]
    tables = done.stdout.strip().split("\n\n")
    assert [table.splitlines()[0] for table in tables] == ["redis", "redis-cluster"]
    for table in tables:
        rows = table.splitlines()[2:]
        assert len(rows) == 8, table
        for row in rows:
            *_, rate, cpu, unit = row.split()
            assert float(rate.replace(",", "")) > 0, row
            assert float(cpu.replace(",", "")) >= 0, row
            assert unit == "µs/1k", row


def test_codecs_benchmark_prints_every_codec_and_the_task_build_rows() -> None:
    """``python -m benchmark.codecs`` runs, with a rate for every row it prints."""
    argv = [sys.executable, "-m", "benchmark.codecs", "--tasks", "200", "--repeat", "1"]

    done = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )

    assert done.returncode == 0, done.stderr[-2000:]
    rows = [
        line.split("|")[1:-1]
        for line in done.stdout.splitlines()
        if line.startswith("| ") and "---" not in line
    ]
    rates = {cells[0].strip(): cells[-1].strip() for cells in rows}
    for name in (
        "pickle",
        "msgpack",
        "hmac+pickle",
        "assemble_task (decoders, a lone push)",
        "assemble_new_tasks, 1,000 (a bulk push)",
    ):
        assert float(rates[name].replace(",", "")) > 0, rates


@pytest.mark.slow
@pytest.mark.redis
def test_a_baseline_build_runs_interleaved_and_gets_its_own_table() -> None:
    """``--baseline PYTHON`` measures that interpreter's build in the same rows and
    reports ours / baseline (here both are this checkout, so only shape is
    checked: every row measured, every ratio printed)."""
    server = BenchmarkServer.started()
    try:
        runner = Runner(server, verbose=False)
        section.measure(
            runner, tasks=2000, single_tasks=200, repeat=1, latency_tasks=5,
            rate=50.0, with_old=False, baseline=sys.executable,
            baseline_prefetch=True,
        )  # fmt: skip
    finally:
        server.stop()
    text = section.report(runner)

    assert runner.errors == []
    assert "| baseline ALO | ours ALO | ALO ours / baseline |" in text
    table = text.split("| tasks/s (median) | baseline ALO")[1]
    for label in ("push, bulk (1,000 per call)", "drain, batches of 1,000"):
        line = next(x for x in table.splitlines() if x.startswith(f"| {label} |"))
        cells = [c.strip() for c in line.split("|")[2:-1]]
        measured = cells if label.startswith("drain") else cells[:6]
        assert all(c not in ("", "—", "nan") for c in measured), line
        assert cells[2].endswith("x"), line
        assert cells[5].endswith("x"), line
        if label.startswith("drain"):
            assert cells[8].endswith("x"), line  # prefetch ours / baseline
    main = text.split("| ours ALO | ours ALO prefetch=2 |")[1]
    for label in ("drain, one at a time", "drain, batches of 1,000"):
        line = next(x for x in main.splitlines() if x.startswith(f"| {label} |"))
        prefetched = line.split("|")[4].strip()
        assert prefetched not in ("", "—", "nan"), line  # the prefetch run's rate


def test_a_missing_redis_server_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    """Without redis-server on PATH the command says what to install, and exits 1."""
    argv = [sys.executable, "-m", "benchmark.redis_costs", "--rounds", "1"]
    env = {**os.environ, "PATH": str(tmp_path)}  # an empty directory

    done = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False, env=env
    )

    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: redis-server not found on PATH: the benchmark and the redis tests "
        "need real servers (apt-get install redis-server redis-tools)"
    ]


def _measured(runner: Runner, key: str, row: str, rates: list[float]) -> None:
    """Store one result per repeat (turn) as ``Runner.measure`` would."""
    for turn, rate in enumerate(rates):
        if rate:  # 0: that repeat failed, nothing was stored
            runner.data[(section.SECTION, key, row)].append(
                {"rate": rate, "tasks": 100, "turn": turn}
            )


def test_ratios_pair_runs_of_the_same_repeat_and_verdicts_count_them() -> None:
    """A ratio's range and a target's "met in k of n repeats" come from runs made
    in the same repeat; a repeat that one contender lost is left out, not paired
    with another repeat's run."""
    runner = Runner(server=None, verbose=False)  # type: ignore[arg-type]
    for row in section.ROWS:
        _measured(runner, "sergeant027", row, [100.0, 200.0, 100.0])
        _measured(runner, "ours", row, [130.0, 0, 110.0])
        _measured(runner, "ours_amo", row, [250.0, 300.0, 150.0])
        _measured(runner, "ours_pf", row, [90.0, 300.0, 100.0])

    assert runner.ratios(section.SECTION, "ours", "sergeant027", "drain_1000") == [
        1.3,
        1.1,
    ]
    text = section.report(runner)
    line = next(x for x in text.splitlines() if x.startswith("| drain, batches of"))
    cells = [c.strip() for c in line.split("|")[1:-1]]
    # Medians: ours 120 / 0.27 100 -> 1.20x; per repeat 1.30 and 1.10.
    assert cells[6] == "1.20x (1.10-1.30)"
    assert cells[7] == "1.00x (0.90-1.50)"  # prefetch: 100 / 100
    assert cells[8] == "2.50x (1.50-2.50)"  # AMO: 250 / 100
    assert cells[9] == (
        "ALO ≥ 1.2x: met (met in 1 of 2 repeats) "
        "(prefetch: **missed** (met in 1 of 3 repeats)); "
        "AMO ≥ 2.0x: met (met in 1 of 3 repeats)"
    )
