"""Bad input, counted: poison written into a live queue between good tasks.

A signed worker (``HmacSigner(PickleCodec())``, ``max_payload_bytes`` set) runs in
a thread on a real SQLite file and on a real redis-server while the test writes,
straight into the broker, alternately a good task and one bad input: random
bytes, truncated payloads, payloads of other codecs, pickles with a missing or
wrong HMAC, a payload over the size limit, and a task naming a kwarg the worker
rejects. Every bad input must end in the dead-letter store with a reason saying
why, every good task must run, and the worker must still be running.

Decoding arbitrary bytes is fuzzed with hypothesis for every codec composition,
signed included, in ``contract_tests/test_codec.py``
(``test_decoding_arbitrary_bytes_yields_a_task_or_decode_error`` and
``test_decoding_a_real_payload_with_a_forged_tail_never_escapes``); this file
checks what the worker loop does with such bytes.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest
from sergeant.adapters.codecs import HmacSigner, JsonCodec, PickleCodec, ZlibCodec
from sergeant.adapters.codecs.msgpack import MsgpackCodec
from sergeant.adapters.executors.serial import SerialExecutor
from sergeant.adapters.watchdogs.null import NullWatchdog

from sergeant.config import WorkerConfig
from sergeant.protocols import QueueLengths
from sergeant.task import Task
from sergeant.worker import Worker

KEY = b"bad-input-suite-key-0123456789ab"
OTHER_KEY = b"someone-else-key-0123456789abcde"
LIMIT = 2048
QUEUE = "bad"
EXPECTED_BAD_INPUTS = 29


class StrictWorker(Worker):
    """Runs tasks whose only kwarg is ``n``; rejects any other kwarg."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ran: list[int] = []

    def work(self, task: Task) -> Any:
        unknown = sorted(set(task.kwargs) - {"n"})
        if unknown:
            return self.reject(task, f"unknown kwargs {unknown}")
        self.ran.append(task.kwargs["n"])
        return None


def signed(**kwargs: Any) -> bytes:
    """A task the worker accepts, encoded as its producers would."""
    return HmacSigner(PickleCodec(), key=KEY).encode(Task(kwargs=kwargs, queue=QUEUE))


def bad_inputs() -> dict[bytes, str]:
    """Every bad payload, mapped to a fragment its dead-letter reason must hold."""
    rng = random.Random(20240229)
    bad: dict[bytes, str] = {}
    for size in (1, 5, 6, 7, 38, 39, 64, 200, 1000, 2048):
        bad[rng.randbytes(size)] = (
            "undecodable payload: payload of" if size < 6
            else "undecodable payload: payload does not start with sergeant's header"
        )  # fmt: skip
    real = signed(n=-1)
    for cut in (2, 5):
        bad[real[:cut]] = "shorter than sergeant's 6-byte header (truncated?)"
    for cut in (6, 20, 38, 39, len(real) // 2, len(real) - 1):
        bad[real[:cut]] = "signature does not match"
    task = Task(kwargs={"n": -2}, queue=QUEUE)
    bad[MsgpackCodec().encode(task)] = "written by msgpack, this codec reads"
    bad[JsonCodec().encode(task)] = "written by json, this codec reads"
    bad[ZlibCodec(PickleCodec()).encode(task)] = "written by pickle+zlib, this codec"
    signed_zlib = HmacSigner(ZlibCodec(PickleCodec()), key=KEY)
    bad[signed_zlib.encode(task)] = "written by pickle+zlib+hmac, this codec reads"
    bad[PickleCodec().encode(task)] = "payload is not signed"
    bad[HmacSigner(PickleCodec(), key=OTHER_KEY).encode(task)] = (
        "signature does not match"
    )
    tampered = bytearray(signed(n=-3))
    tampered[-2] ^= 0x01
    bad[bytes(tampered)] = "signature does not match"
    forged_mac = bytearray(signed(n=-4))
    forged_mac[10] ^= 0x80
    bad[bytes(forged_mac)] = "signature does not match"
    big = signed(n=-5, text="x" * (LIMIT + 100))
    bad[big] = f"exceeds max_payload_bytes ({LIMIT})"
    bad[signed(n=-6, admin=True)] = "rejected: unknown kwargs ['admin']"
    bad[signed(n=-7, path="/etc/passwd", n2=1)] = "rejected: unknown kwargs ['n2',"
    return bad


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def live_broker(request: pytest.FixtureRequest) -> Any:
    """A real broker: an SQLite file, or a namespace on a real redis-server."""
    return request.getfixturevalue(f"{request.param}_broker")


def test_every_bad_input_is_dead_lettered_with_its_reason(live_broker: Any) -> None:
    """Poison between good tasks: each bad input is dead-lettered with a reason that
    says why, every good task runs, and the worker keeps running."""
    bad = bad_inputs()
    worker = StrictWorker(
        broker=live_broker,
        codec=HmacSigner(PickleCodec(), key=KEY),
        executor=SerialExecutor(),
        watchdog=NullWatchdog(),
        config=WorkerConfig(
            name=QUEUE,
            tasks_per_transaction=4,
            wait=0.05,
            lease=30.0,
            max_payload_bytes=LIMIT,
        ),
    )
    runner = threading.Thread(target=worker.run, name="bad-input-worker")
    runner.start()
    try:
        for n, payload in enumerate(bad):
            live_broker.push(QUEUE, [signed(n=n)])
            live_broker.push(QUEUE, [payload])
        live_broker.push(QUEUE, [signed(n=len(bad))])
        give_up = time.monotonic() + 60
        while time.monotonic() < give_up and (
            len(worker.ran) <= len(bad) or live_broker.lengths(QUEUE).dead < len(bad)
        ):
            time.sleep(0.05)
        still_running = runner.is_alive() and not worker.stopping
    finally:
        worker.request_stop()
        runner.join(timeout=30)
    letters = live_broker.dead_letters(QUEUE, limit=1000)
    reasons = {letter.payload: letter.reason for letter in letters}
    print(f"bad inputs tried: {len(bad)}; dead-lettered: {len(letters)}")

    assert len(bad) == EXPECTED_BAD_INPUTS
    assert still_running
    assert sorted(worker.ran) == list(range(len(bad) + 1))
    assert len(letters) == len(bad)
    assert {p: f for p, f in bad.items() if f not in reasons.get(p, "")} == {}
    assert live_broker.lengths(QUEUE) == QueueLengths(dead=len(bad))
