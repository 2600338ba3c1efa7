"""The limits of this machine: raw Redis list commands and task encoding alone.

``redis-benchmark`` with one client (the benchmark's producers and workers are
one client each), LPUSH then RPOP of 100-byte values, one command per round trip
and pipelined 1,000 deep; the time our codec takes to encode N tasks (and to
decode them), 1,000 per call as the queue calls it, no broker at all; and a bare
Python loop on redis-py with no queue library: ``pickle.dumps`` of the kwargs
alone and RPUSH 1,000 per call, then LPOP 1,000 per call, ``pickle.loads`` and a
call of a no-op per task. No queue can beat these. The bare loop is the ceiling
of any library that pickles each task in Python through redis-py: what separates
a library from it is its own per-task work (ids, a task record, leases,
validation, its worker loop).
"""

from __future__ import annotations

import csv
import pickle
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
    """Tasks/s to encode ``tasks`` tasks and to decode them, 1,000 per call.

    In batches, as the producer's bulk push and the worker's batch drain call the
    codec (``encode_many`` / ``decode_many``); the tasks are built beforehand, so
    this is the codec alone.
    """
    codec = PickleCodec()
    built = [Task(kwargs=KWARGS, queue="bench") for _ in range(tasks)]
    batches = [built[i : i + 1000] for i in range(0, tasks, 1000)]
    started = time.perf_counter()
    encoded = [codec.encode_many(batch) for batch in batches]
    encode = tasks / (time.perf_counter() - started)
    got = 0
    started = time.perf_counter()
    for payloads in encoded:  # one batch alive at a time, as in a worker
        got += len(codec.decode_many(payloads))
    decode = tasks / (time.perf_counter() - started)
    if got != tasks or codec.decode_many(encoded[-1])[-1] != batches[-1][-1]:
        raise RuntimeError("the floor's codec did not give back every task")
    return encode, decode


def _no_op(kwargs: dict[str, object]) -> None:
    """The task the bare loop runs."""


def bare_loop(server: RedisServer, tasks: int) -> tuple[float, float]:
    """Tasks/s of the bare loop's push (1,000 per RPUSH) and drain (LPOP 1,000)."""
    server.flush()
    client = server.client()
    key, dumps, loads, run = "bare", pickle.dumps, pickle.loads, _no_op
    started = time.perf_counter()
    for start in range(0, tasks, 1000):
        client.rpush(key, *[dumps(KWARGS) for _ in range(min(1000, tasks - start))])
    push = tasks / (time.perf_counter() - started)
    done = 0
    started = time.perf_counter()
    while got := client.lpop(key, 1000):
        for payload in got:
            run(loads(payload))
        done += len(got)
    drain = done / (time.perf_counter() - started)
    client.close()
    if done != tasks:
        raise RuntimeError(f"the bare loop drained {done} tasks, not {tasks}")
    return push, drain


def measure(server: RedisServer, tasks: int, repeat: int) -> dict[str, float]:
    """Median of each floor over ``repeat`` runs."""
    samples: dict[str, list[float]] = {}
    for _ in range(repeat):
        found = {}
        for depth, count in ((1, max(1000, tasks // 2)), (1000, tasks * 10)):
            for command, value in redis_benchmark(server, count, depth).items():
                found[f"{command} {depth}"] = value
        found["encode"], found["decode"] = codec_rates(tasks)
        found["bare push"], found["bare drain"] = bare_loop(server, tasks)
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
        ("encode", f"PickleCodec.encode_many, {tasks:,} tasks, 1,000 per call"),
        ("decode", f"PickleCodec.decode_many, {tasks:,} tasks, 1,000 per call"),
        ("bare push", "bare loop: pickle.dumps(kwargs), RPUSH 1,000 per call"),
        ("bare drain", "bare loop: LPOP 1,000, pickle.loads, call a no-op"),
    ]
    rows = [
        [label, _table.rate(floors.get(key, float("nan")))] for key, label in labels
    ]
    return _table.table(["floor (median)", "per second"], rows)
