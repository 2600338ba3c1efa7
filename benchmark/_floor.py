"""The limits of this machine: raw Redis list commands and task encoding alone.

``redis-benchmark`` with one client (the benchmark's producers and workers are
one client each), LPUSH then RPOP of 100-byte values, one command per round trip
and pipelined 1,000 deep; and the time to build and pickle N tasks (and to
unpickle them) with our codec, no broker at all. No queue can beat these.
"""

from __future__ import annotations

import csv
import shutil
import statistics
import subprocess
import time

from sergeant.adapters.codecs import PickleCodec

from sergeant.task import Task

from . import _table
from ._redis_server import HOST, RedisServer
from .peers._common import KWARGS


def redis_benchmark(server: RedisServer, tasks: int, pipeline: int) -> dict[str, float]:
    """Requests/s of LPUSH and RPOP for one client (``pipeline`` deep)."""
    path = shutil.which("redis-benchmark")
    if path is None:
        raise SystemExit("redis-benchmark not found (apt-get install redis-tools)")
    server.flush()
    argv = [
        path,
        "-h",
        HOST,
        "-p",
        str(server.port),
        "-c",
        "1",
        "-n",
        str(tasks),
        "-P",
        str(pipeline),
        "-d",
        "100",
        "-t",
        "lpush,rpop",
        "--csv",
    ]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=300)
    rows = list(csv.reader(out.stdout.splitlines()))
    return {row[0]: float(row[1]) for row in rows[1:] if len(row) > 1}


def codec_rates(tasks: int) -> tuple[float, float]:
    """Tasks/s to build and encode ``tasks`` tasks, and to decode them."""
    codec = PickleCodec()
    started = time.perf_counter()
    payloads = [codec.encode(Task(kwargs=KWARGS, queue="bench")) for _ in range(tasks)]
    encode = tasks / (time.perf_counter() - started)
    decode = codec.decode
    started = time.perf_counter()
    for payload in payloads:
        decode(payload)
    return encode, tasks / (time.perf_counter() - started)


def measure(server: RedisServer, tasks: int, repeat: int) -> dict[str, float]:
    """Median of each floor over ``repeat`` runs."""
    samples: dict[str, list[float]] = {}
    for _ in range(repeat):
        found = {}
        for depth, count in ((1, max(1000, tasks // 2)), (1000, tasks * 10)):
            for command, value in redis_benchmark(server, count, depth).items():
                found[f"{command} {depth}"] = value
        found["encode"], found["decode"] = codec_rates(tasks)
        for key, value in found.items():
            samples.setdefault(key, []).append(value)
    return {key: statistics.median(values) for key, values in samples.items()}


def report(floors: dict[str, float], tasks: int) -> str:
    """The floors as a table."""
    labels = [
        ("LPUSH 1", "redis-benchmark LPUSH, 1 client, no pipeline"),
        ("RPOP 1", "redis-benchmark RPOP, 1 client, no pipeline"),
        ("LPUSH 1000", "redis-benchmark LPUSH, 1 client, pipeline 1,000"),
        ("RPOP 1000", "redis-benchmark RPOP, 1 client, pipeline 1,000"),
        ("encode", f"build + PickleCodec.encode {tasks:,} tasks (no broker)"),
        ("decode", f"PickleCodec.decode {tasks:,} tasks (no broker)"),
    ]
    rows = [
        [label, _table.rate(floors.get(key, float("nan")))] for key, label in labels
    ]
    return _table.table(["floor (median)", "per second"], rows)
