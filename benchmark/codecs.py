"""Codec throughput: encode and decode 100k small tasks per composition.

Run from the repository root::

    python -m benchmark.codecs [--tasks N] [--repeat R]

Prints a markdown table: payload size, encodes/s, decodes/s and full round trips/s
(encode then decode), the best of R runs; then the same encodes and decodes done
in batches of 1,000 (``encode_all``/``decode_all``, which go through the codec's
``encode_many``/``decode_many``: what producers and workers call). The hot path
of a queue is encode -> push and reserve -> decode, so these are the per-task
costs a broker adds to. Then how fast a Task is built from its fields: by
``assemble_task`` (what decoders and a lone push use), by ``assemble_task``
in a list comprehension of 1,000 (how a bulk push did it before) and by
``assemble_new_tasks`` (how it does it: the fields set in the loop's body, no
call per task), and by the public constructor; and how fast task ids are drawn
(one per pushed task).

Decoded tasks are dropped as they are made, as a worker drops them once run:
keeping 100k decoded tasks alive would mostly measure the garbage collector
scanning them (it halves the decode rate).
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable
from typing import Any

from sergeant.adapters.codecs import (
    HmacSigner,
    JsonCodec,
    LzmaCodec,
    PickleCodec,
    ZlibCodec,
)
from sergeant.adapters.codecs.msgpack import MsgpackCodec

from sergeant import protocols
from sergeant.task import (
    Priority,
    Task,
    assemble_new_tasks,
    assemble_task,
    new_task_id,
)

KEY = b"benchmark-key-benchmark-key-32by"

COMPOSITIONS: dict[str, Callable[[], Any]] = {
    "pickle": PickleCodec,
    "msgpack": MsgpackCodec,
    "json": JsonCodec,
    "zlib+pickle": lambda: ZlibCodec(PickleCodec()),
    "zlib+msgpack": lambda: ZlibCodec(MsgpackCodec()),
    "hmac+pickle": lambda: HmacSigner(PickleCodec(), key=KEY),
    "hmac+zlib+pickle": lambda: HmacSigner(ZlibCodec(PickleCodec()), key=KEY),
    "lzma(1)+pickle": lambda: LzmaCodec(PickleCodec(), level=1),
}
SLOW = {"lzma(1)+pickle"}  # measured on a tenth of the tasks


def best_rate(work: Callable[[], object], count: int, repeat: int) -> float:
    """Items per second of ``work`` (which handles ``count`` items), best run."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return count / best


BATCH = 1000


def measure(codec: Any, tasks: list[Task], repeat: int) -> list[float]:
    """Payload size, then encodes and decodes per second: one by one, in batches."""
    encode, decode = codec.encode, codec.decode
    payloads = [encode(task) for task in tasks]
    assert decode(payloads[0]) == tasks[0]

    def encode_all() -> None:
        for task in tasks:
            encode(task)

    def decode_all() -> None:
        for payload in payloads:
            decode(payload)

    def encode_batches() -> None:
        for start in range(0, len(tasks), BATCH):
            protocols.encode_all(codec, tasks[start : start + BATCH])

    def decode_batches() -> None:
        for start in range(0, len(payloads), BATCH):
            protocols.decode_all(codec, payloads[start : start + BATCH])

    return [
        len(payloads[0]),
        *(
            best_rate(work, len(tasks), repeat)
            for work in (encode_all, decode_all, encode_batches, decode_batches)
        ),
    ]


def main(argv: list[str] | None = None) -> None:
    """Print the throughput table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    tasks = [
        Task(kwargs={"url": "https://example.com/x", "n": 1}, queue="bench")
        for _ in range(args.tasks)
    ]
    print(f"{args.tasks} tasks of kwargs {tasks[0].kwargs}, best of {args.repeat}\n")
    print(
        "| codec | bytes | encode/s | decode/s | round trip/s "
        f"| encode/s, {BATCH:,} per call | decode/s, {BATCH:,} per call |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, build in COMPOSITIONS.items():
        sample = tasks[: max(1, len(tasks) // 10)] if name in SLOW else tasks
        size, encodes, decodes, batch_encodes, batch_decodes = measure(
            build(), sample, args.repeat
        )
        both = 1 / (1 / encodes + 1 / decodes)
        print(
            f"| {name} | {size:.0f} | {encodes:,.0f} | {decodes:,.0f} | {both:,.0f} "
            f"| {batch_encodes:,.0f} | {batch_decodes:,.0f} |"
        )
    print()
    print("| building a Task from its fields, or its id | tasks/s |")
    print("| --- | ---: |")
    for name, rate in build_rates(args.tasks, args.repeat).items():
        print(f"| {name} | {rate:,.0f} |")


def build_rates(count: int, repeat: int) -> dict[str, float]:
    """Tasks built per second by ``assemble_task``, ``assemble_new_tasks`` and
    ``Task(...)``; task ids drawn per second."""
    kwargs = {"url": "https://example.com/x", "n": 1}
    normal = Priority.NORMAL

    def assembled() -> None:
        for _ in range(count):
            assemble_task(kwargs, "bench", "id", "id", 1.0, 0, normal, None, None)

    kwargs_list, batch_ids = [kwargs] * BATCH, [f"id{i}" for i in range(BATCH)]

    def listed() -> None:  # how a bulk push built its tasks until 2026-12-06
        for _ in range(0, count, BATCH):
            [
                assemble_task(k, "bench", i, i, 1.0, 0, normal, None, None)
                for k, i in zip(kwargs_list, batch_ids, strict=True)
            ]

    def in_bulk() -> None:
        for _ in range(0, count, BATCH):
            assemble_new_tasks(kwargs_list, batch_ids, "bench", 1.0, normal, None, None)

    def constructed() -> None:
        for _ in range(count):
            Task(kwargs=kwargs, queue="bench", id="id", trace_id="id", created_at=1.0)

    # Ids: a bulk push draws one per task. For comparison, the format ids had
    # before (the counter as 8 hex digits, drawn one ``next`` at a time).
    hex_format, counter = new_task_id.prefix + "%08x", itertools.count()

    def ids() -> None:
        for _ in range(0, count, BATCH):
            new_task_id.many(BATCH)

    def hex_ids() -> None:
        for _ in range(0, count, BATCH):
            [hex_format % next(counter) for _ in range(BATCH)]

    return {
        "assemble_task (decoders, a lone push)": best_rate(assembled, count, repeat),
        f"assemble_task, {BATCH:,} into a list (a bulk push, before)": best_rate(
            listed, count, repeat
        ),
        f"assemble_new_tasks, {BATCH:,} (a bulk push)": best_rate(
            in_bulk, count, repeat
        ),
        "Task(...) (the public constructor)": best_rate(constructed, count, repeat),
        f"task ids, new_task_id.many({BATCH:,})": best_rate(ids, count, repeat),
        "task ids, the former '%08x' counter": best_rate(hex_ids, count, repeat),
    }


if __name__ == "__main__":
    main()
