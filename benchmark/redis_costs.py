"""What Redis commands and Lua scripts cost the server (not a test).

Run from the repository root::

    python -m benchmark.redis_costs [--rounds 5]

It starts its own redis-server and prints, per call, the server's CPU time
(``INFO cpu``, user + system, read before and after a run of calls; it includes
reading each request and writing its reply) and the wall time seen by one client,
for: a PING and a Lua script that does nothing (what calling a script costs by
itself); 1,000 entries pushed by a plain RPUSH and by the broker's push script;
1,000 entries popped by a plain LMPOP and by a one-line Lua LPOP; and
at-least-once reserves of 1, 30, 100 and 1,000 tasks (each acking the previous
batch whole) by the broker's reserve script, which moves them with ``SORT ...
STORE`` into the batch's list, in its two forms: the script returns the entries
(through Lua), or an ``LRANGE`` in the same MULTI reads them (the form the broker
uses from ``LISTED_FROM`` tasks on). For comparison, the 1-task reserve as the
same nine commands in a plain pipeline, and the 1,000-task one done the way the
broker did it until 2026-12-04: entries popped into Lua and written to a hash.
The numbers behind keeping payloads out of Lua where atomicity allows
(``docs/redis.md``). Medians of ``--rounds`` rounds.

A second table is client-side only: the time to pack that 1,000-entry RPUSH into
wire bytes with redis-py's packer and with hiredis' ``pack_command``, which the
broker uses on its dedicated connection, and the time to turn 1,000 reserved
entries into the ``Delivery`` objects the worker gets.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import hiredis
import redis
from sergeant.adapters.redis import scripts
from sergeant.adapters.redis._node import FLAGS_AT, _exchange, reserve_args
from sergeant.adapters.redis._receipts import deliveries

from ._redis_server import RedisServer, run_cli, server_cpu_seconds

KEYS = [f"{{bench:q}}:{k}" for k in scripts.QUEUE_KEYS]
ENTRIES = [b"%020d1%08x" % (i, 0) + b"x" * 110 for i in range(1_000)]
# A 1,000-task lease as it was done before the lease lists: the entries popped
# into Lua and written to a hash rid -> entry, the previous batch's hash dropped.
HASH_LEASE = """
if ARGV[3] ~= '' then
  redis.call('DEL', ARGV[3])
  redis.call('ZREM', KEYS[4], ARGV[3])
end
local got = redis.call('LPOP', KEYS[2], ARGV[1]) or {}
local h = {}
for i = 1, #got do
  h[2 * i - 1] = string.sub(got[i], 1, 20)
  h[2 * i] = got[i]
end
for i = 1, #h, 2000 do
  redis.call('HSET', ARGV[2], unpack(h, i, math.min(i + 1999, #h)))
end
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[2])
return got
"""


def _measure(
    probe: redis.Redis, setup: Callable[[int], None], call: Callable[[], None], n: int
) -> tuple[float, float]:
    """Server CPU µs and wall µs per ``call``, over ``n`` calls after ``setup(n)``."""
    setup(n)
    before = server_cpu_seconds(probe)
    started = time.perf_counter()
    for _ in range(n):
        call()
    wall = time.perf_counter() - started
    cpu = server_cpu_seconds(probe) - before
    return cpu / n * 1e6, wall / n * 1e6


def rows(server: RedisServer, rounds: int) -> list[tuple[str, float, float]]:
    """(operation, server CPU µs per call, wall µs per call), medians of rounds."""
    probe = server.client()
    conn: Any = server.client().connection_pool.get_connection()
    push = probe.script_load(scripts.PUSH)
    lua_pop = probe.script_load("return redis.call('LPOP', KEYS[1], ARGV[1])")
    nothing = probe.script_load("return 1")
    members = iter(range(10**9))

    def fill(n: int) -> None:  # enough entries for n pops of 1,000
        probe.delete(*KEYS)
        for _ in range(n):
            probe.rpush(KEYS[1], *ENTRIES)

    def empty(n: int) -> None:
        probe.delete(*KEYS)

    reserve = probe.script_load(scripts.RESERVE)
    hash_lease = probe.script_load(HASH_LEASE)
    held = [""]  # the batch the previous reserve leased

    def leased(count: int, *, listed: bool) -> Callable[[], None]:
        # The at-least-once step: lease ``count``, ack the previous batch whole;
        # the entries come back from the script, or (listed) from an LRANGE in
        # the same MULTI. The broker picks by size (see LISTED_FROM).
        def step() -> None:
            member = f"b{next(members)}:w"
            args = reserve_args(time.time(), count, 60.0, member, woken=False)
            acks = [held[0], "*"] if held[0] else []
            script = ("EVALSHA", reserve, len(KEYS), *KEYS)
            if listed:
                args[FLAGS_AT] += "l"
                batch = f"{KEYS[3]}:{member.partition(':')[0]}"
                replies = _exchange(conn, [
                    ("MULTI",), (*script, *args, *acks),
                    ("LRANGE", batch, 0, -1), ("EXEC",),
                ])  # fmt: skip
                got = replies[-1][1]
            else:
                replies = _exchange(conn, [(*script, *args, *acks)])
                got = replies[0][0]
            if len(got) != count:  # an error reply, or a queue filled too little
                raise RuntimeError(f"a reserve of {count} got {replies!r:.300}")
            held[0] = member

        return step

    def hash_step() -> None:
        key = f"{KEYS[3]}:b{next(members)}"
        _exchange(
            conn,
            [("EVALSHA", hash_lease, 6, *KEYS, 1000, key, held[0], time.time() + 60)],
        )
        held[0] = key

    def same_as_plain_commands() -> None:
        now = time.time()
        batch = KEYS[3] + ":b"
        _exchange(conn, [
            ("DEL", batch), ("ZREM", KEYS[3], "b:w"),
            ("ZRANGEBYSCORE", KEYS[3], "-inf", now, "LIMIT", 0, 100),
            ("ZRANGEBYSCORE", KEYS[2], "-inf", now, "LIMIT", 0, 1000),
            ("SORT", KEYS[0], "BY", "nosort", "LIMIT", 0, 1, "STORE", batch),
            ("SORT", KEYS[1], "BY", "nosort", "LIMIT", 0, 1, "STORE", batch),
            ("LTRIM", KEYS[1], 1, -1),
            ("ZADD", KEYS[3], now + 60, "b:w"),
            ("LRANGE", batch, 0, -1),
        ])  # fmt: skip

    def fresh(fill_with: Callable[[int], None]) -> Callable[[int], None]:
        def setup(n: int) -> None:
            fill_with(n)
            held[0] = ""

        return setup

    cases: list[tuple[str, Callable[[int], None], Callable[[], None], int]] = [
        ("PING", empty, lambda: _exchange(conn, [("PING",)]), 300),
        ("a script that does nothing", empty,
         lambda: _exchange(conn, [("EVALSHA", nothing, 0)]), 300),
        ("RPUSH 1,000 entries, plain", empty,
         lambda: _exchange(conn, [("RPUSH", KEYS[1], *ENTRIES)]), 30),
        ("RPUSH 1,000 entries, push script", empty,
         lambda: _exchange(conn, [("EVALSHA", push, 6, *KEYS, 1, "", *ENTRIES)]), 30),
        ("pop 1,000 entries, plain LMPOP", fill,
         lambda: _exchange(conn, [("LMPOP", 1, KEYS[1], "LEFT", "COUNT", 1000)]), 30),
        ("pop 1,000 entries, Lua LPOP", fill,
         lambda: _exchange(conn, [("EVALSHA", lua_pop, 1, KEYS[1], 1000)]), 30),
        ("lease 1 + ack 1, script returns it", fresh(fill),
         leased(1, listed=False), 300),
        ("lease 1 + ack 1, MULTI + LRANGE", fresh(fill), leased(1, listed=True), 300),
        ("the same 9 commands, plain pipeline", fill, same_as_plain_commands, 300),
        ("lease 30 + ack 30, script returns it", fresh(fill),
         leased(30, listed=False), 100),
        ("lease 30 + ack 30, MULTI + LRANGE", fresh(fill),
         leased(30, listed=True), 100),
        ("lease 100 + ack 100, script returns it", fresh(fill),
         leased(100, listed=False), 100),
        ("lease 100 + ack 100, MULTI + LRANGE", fresh(fill),
         leased(100, listed=True), 100),
        ("lease 1,000 + ack 1,000, script returns it", fresh(fill),
         leased(1000, listed=False), 30),
        ("lease 1,000 + ack 1,000, MULTI + LRANGE", fresh(fill),
         leased(1000, listed=True), 30),
        ("the same through Lua into a hash (before)", fresh(fill), hash_step, 30),
    ]  # fmt: skip
    results: dict[str, list[tuple[float, float]]] = {name: [] for name, *_ in cases}
    for _ in range(rounds):
        for name, setup, call, n in cases:
            results[name].append(_measure(probe, setup, call, n))
    conn.disconnect()
    probe.close()
    return [
        (
            name,
            statistics.median(cpu for cpu, _ in got),
            statistics.median(wall for _, wall in got),
        )
        for name, got in results.items()
    ]


def packing(server: RedisServer, rounds: int) -> list[tuple[str, float]]:
    """(client step, µs for 1,000 entries), best of ``rounds`` x 200: packing one
    RPUSH of them, and building the Deliveries a reserve of them hands out."""
    conn: Any = server.client().connection_pool.get_connection()
    command: tuple[Any, ...] = ("RPUSH", KEYS[1], *ENTRIES)
    member = "0123456789abcdef0123:worker-owner-name"
    steps: dict[str, Callable[[], object]] = {
        "pack: redis-py (connection.pack_commands)": lambda: conn.pack_commands(
            [command]
        ),
        "pack: hiredis.pack_command (the broker's)": lambda: hiredis.pack_command(
            command
        ),
        "build the reserve's 1,000 Deliveries": lambda: deliveries(
            ENTRIES, [], member, ""
        ),
    }
    best = {}
    for name, pack in steps.items():
        times = []
        for _ in range(max(1, rounds)):
            started = time.perf_counter()
            for _ in range(200):
                pack()
            times.append((time.perf_counter() - started) / 200 * 1e6)
        best[name] = min(times)
    return list(best.items())


def main(argv: list[str] | None = None) -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    server = RedisServer.started()
    try:
        table = rows(server, args.rounds)
        packed = packing(server, args.rounds)
    finally:
        server.stop()
    print(f"{'operation':<42} {'server CPU µs':>14} {'wall µs':>10}")
    for name, cpu, wall in table:
        print(f"{name:<42} {cpu:>14,.1f} {wall:>10,.1f}")
    print()
    print(f"{'client work on 1,000 entries':<42} {'µs':>14}")
    for name, micros in packed:
        print(f"{name:<42} {micros:>14,.1f}")


if __name__ == "__main__":
    run_cli(main)
