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
batch whole): below ``scripts.SORT_FROM`` by the lean reserve script that the
broker sends between two upkeeps (``scripts.RESERVE_FEW``), and by the broker's
whole reserve script, three ways: popped through Lua and
pushed to the batch's list, which the script returns; moved by ``SORT ...
STORE``, the script returning the list; and moved by ``SORT ... STORE``, read by
an ``LRANGE`` in the same MULTI. The broker pops through Lua below
``scripts.SORT_FROM`` tasks and takes the third way from there on (the rows mark
it); the other rows run the same script with that threshold changed. For
comparison, the 1-task reserve as the same seven commands in a plain pipeline,
and the 1,000-task one done the way the broker did it until 2026-12-04: entries
popped into Lua and written to a hash. Last, the cost per task of dead-lettering
a leased batch of 1,000 task by task (what a worker does with a batch of
undecodable payloads). The numbers behind keeping payloads out of Lua where
atomicity allows (``docs/redis.md``). Medians of ``--rounds`` rounds.

A second table is client-side only: the time to pack that 1,000-entry RPUSH into
wire bytes with redis-py's packer and with hiredis' ``pack_command``, which the
broker uses on its dedicated connection; to build it from 1,000 payloads, by
making the entries and then packing them, and by ``packed_rpush`` (what a ready
push does on a dedicated connection); and the time to turn 1,000 reserved
entries into the ``Delivery`` objects the worker gets (their delivery counts read
client-side, as the broker does for a batch read by ``LRANGE``).

A third table gives the server's CPU time per ``redis.call`` of single commands
inside a script (a script calling it 100,000 times): what one more command in a
hot script costs, such as the lean reserve script's check for a due delayed task.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import hiredis
import redis
from sergeant.adapters.redis import scripts
from sergeant.adapters.redis._node import (
    FLAGS_AT,
    HEADER_LEN,
    _exchange,
    new_entries,
    packed_rpush,
    reserve_args,
)
from sergeant.adapters.redis._receipts import deliveries

from ._redis_server import RedisServer, run_cli, server_cpu_seconds

KEYS = [f"{{bench:q}}:{k}" for k in scripts.QUEUE_KEYS]
ENTRIES = [b"%020d1%08x" % (i, 0) + b"x" * 110 for i in range(1_000)]
PAYLOADS = [entry[HEADER_LEN:] for entry in ENTRIES]  # without rid and header
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


def per_call(
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


Case = tuple[str, Callable[[int], None], Callable[[], None], int]


def medians(
    results: dict[str, list[tuple[float, float]]],
) -> list[tuple[str, float, float]]:
    """(name, median server CPU µs, median wall µs) per name of ``results``."""
    return [
        (
            name,
            statistics.median(cpu for cpu, _ in got),
            statistics.median(wall for _, wall in got),
        )
        for name, got in results.items()
    ]


class _Reserves:
    """The at-least-once reserve cases: lease N tasks, ack the previous batch."""

    def __init__(self, probe: redis.Redis, conn: Any) -> None:
        self.probe, self.conn = probe, conn
        threshold = f"local SORT_FROM = {scripts.SORT_FROM}\n"
        if threshold not in scripts.RESERVE:
            raise RuntimeError("the reserve script no longer sets SORT_FROM so")
        load = probe.script_load
        # The same script, moving every batch through Lua, or every one by SORT.
        self.by_lua = load(
            scripts.RESERVE.replace(threshold, "local SORT_FROM = 1e9\n")
        )
        self.by_sort = load(scripts.RESERVE.replace(threshold, "local SORT_FROM = 1\n"))
        self.few = load(scripts.RESERVE_FEW)
        self.hash_lease = load(HASH_LEASE)
        self.dead_letter = probe.script_load(scripts.DEAD_LETTER)
        self.held = ""  # the batch the previous reserve leased
        self.members = iter(range(10**9))
        self.doomed: Iterator[bytes] = iter(())  # the tasks dead_one has yet to kill

    def fill(self, n: int) -> None:
        """Enough entries for n reserves of up to 1,000; no batch held."""
        self.probe.delete(*KEYS)
        for _ in range(n):
            self.probe.rpush(KEYS[1], *ENTRIES)
        self.held = ""

    def step(self, count: int, way: str) -> Callable[[], None]:
        def call() -> None:
            member = f"b{next(self.members)}:w"
            args = reserve_args(time.time(), count, 60.0, member, woken=False)
            acks = [self.held, "*"] if self.held else []
            sha = {"lua": self.by_lua, "few": self.few}.get(way, self.by_sort)
            script = ("EVALSHA", sha, len(KEYS), *KEYS)
            if way == "listed":
                args[FLAGS_AT] += "l"
                batch = f"{KEYS[3]}:{member.partition(':')[0]}"
                replies = _exchange(self.conn, [
                    ("MULTI",), (*script, *args, *acks),
                    ("LRANGE", batch, 0, -1), ("EXEC",),
                ])  # fmt: skip
                got = replies[-1][1]
            else:
                replies = _exchange(self.conn, [(*script, *args, *acks)])
                got = replies[0][0]
            if len(got) != count:  # an error reply, or a queue filled too little
                raise RuntimeError(f"a reserve of {count} got {replies!r:.300}")
            self.held = member

        return call

    def ways(self, count: int, calls: int) -> list[Case]:
        """The ways to lease ``count``; ``*`` marks the broker's (below
        ``SORT_FROM``: the lean script, and every ``MAINTAIN_EVERY`` the whole
        one popping through Lua, ``(*)``)."""
        few = count < scripts.SORT_FROM
        broker = {"few": "*", "lua": "(*)"} if few else {"listed": "*"}
        names = {
            **({"few": "lean script (RESERVE_FEW), no upkeep"} if few else {}),
            "lua": "popped through Lua",
            "sort": "SORT STORE, script returns it",
            "listed": "SORT STORE, MULTI + LRANGE",
        }
        return [
            (f"lease {count:,} + ack: {name} {broker.get(way, '')}".rstrip(),
             self.fill, self.step(count, way), calls)
            for way, name in names.items()
        ]  # fmt: skip

    def in_plain_commands(self) -> None:
        """A 1-task lease as plain commands (what the script runs, minus Lua)."""
        now = time.time()
        batch = KEYS[3] + ":b"
        _exchange(self.conn, [
            ("DEL", batch), ("ZREM", KEYS[3], "b:w"),
            ("ZRANGEBYSCORE", KEYS[3], "-inf", now, "LIMIT", 0, 100),
            ("ZRANGEBYSCORE", KEYS[2], "-inf", now, "LIMIT", 0, 1000),
            ("LMPOP", 2, KEYS[0], KEYS[1], "LEFT", "COUNT", 1),
            ("RPUSH", batch, ENTRIES[0]),
            ("ZADD", KEYS[3], now + 60, "b:w"),
        ])  # fmt: skip

    def into_a_hash(self) -> None:
        """A 1,000-task lease the way the broker did it before lease lists."""
        key = f"{KEYS[3]}:b{next(self.members)}"
        deadline = time.time() + 60
        command = ("EVALSHA", self.hash_lease, 6, *KEYS, 1000, key, self.held, deadline)
        _exchange(self.conn, [command])
        self.held = key

    def lease_to_kill(self, n: int) -> None:
        """A leased 1,000-task batch whose tasks ``dead_one`` dead-letters in turn."""
        self.fill(1)
        self.step(1000, "listed")()
        self.doomed = iter(ENTRIES)

    def dead_one(self) -> None:
        """Dead-letter the batch's next task, as a worker does with a bad payload."""
        entry = next(self.doomed)
        record = b"%f\n6\npoison%s" % (time.time(), entry[29:])
        command = ("EVALSHA", self.dead_letter, 6, *KEYS, record, self.held, entry[:20])
        (recorded,) = _exchange(self.conn, [command])
        if recorded != 1:
            raise RuntimeError(f"a dead letter was not recorded: {recorded!r}")

    def cases(self) -> list[Case]:
        return [
            *self.ways(1, 300),
            ("lease 1 + ack: the same 7 commands, plain pipeline", self.fill,
             self.in_plain_commands, 300),
            *self.ways(30, 100),
            *self.ways(100, 100),
            *self.ways(1000, 30),
            ("lease 1,000 + ack: through Lua into a hash (before)", self.fill,
             self.into_a_hash, 30),
            ("dead-letter 1 task of a leased 1,000, all in turn", self.lease_to_kill,
             self.dead_one, 1000),
        ]  # fmt: skip


def rows(server: RedisServer, rounds: int) -> list[tuple[str, float, float]]:
    """(operation, server CPU µs per call, wall µs per call), medians of rounds."""
    probe = server.client()
    conn: Any = server.client().connection_pool.get_connection()
    push = probe.script_load(scripts.PUSH)
    lua_pop = probe.script_load("return redis.call('LPOP', KEYS[1], ARGV[1])")
    nothing = probe.script_load("return 1")
    reserves = _Reserves(probe, conn)

    def empty(n: int) -> None:
        probe.delete(*KEYS)

    fill = reserves.fill
    cases: list[Case] = [
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
        *reserves.cases(),
    ]  # fmt: skip
    results: dict[str, list[tuple[float, float]]] = {name: [] for name, *_ in cases}
    for _ in range(rounds):
        for name, setup, call, n in cases:
            results[name].append(per_call(probe, setup, call, n))
    conn.disconnect()
    probe.close()
    return medians(results)


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
        # A ready push from payloads: the entries built, then packed (the broker's
        # way until 2026-12-06), or formatted straight into the RPUSH's wire form.
        "push: new_entries + hiredis.pack_command": lambda: hiredis.pack_command(
            ("RPUSH", KEYS[1], *new_entries(PAYLOADS, 1))
        ),
        "push: packed_rpush (the broker's)": lambda: packed_rpush(KEYS[1], PAYLOADS, 1),
        # None: the delivery counts are read here, as after an LRANGE.
        "build the reserve's 1,000 Deliveries": lambda: deliveries(
            ENTRIES, None, member, ""
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


# Single commands as a script runs them, each timed by a script that calls it
# 100,000 times (server CPU per call, the script's own overhead spread thin):
# what one more ``redis.call`` in a hot script costs.
IN_LUA_CALLS = 100_000
IN_LUA: dict[str, str] = {
    "EXISTS, no such key (lean due check, nothing delayed)": (
        "redis.call('EXISTS', KEYS[1])"
    ),
    "EXISTS + ZRANGE 0 0 WITHSCORES, 100 delayed (lean due check)": (
        "if redis.call('EXISTS', KEYS[2]) == 1 then\n"
        "local h = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')\n"
        "local due = tonumber(h[2]) <= 1\n"
        "end"
    ),
    "ZRANGE 0 0 WITHSCORES, no such set": (
        "redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')"
    ),
    "LMOVE from an empty list": (
        "redis.call('LMOVE', KEYS[1], KEYS[3], 'LEFT', 'RIGHT')"
    ),
}


def in_lua(server: RedisServer, rounds: int) -> list[tuple[str, float]]:
    """(command, server CPU µs per call inside a script), medians of ``rounds``."""
    probe = server.client()
    keys = ("{c}none", "{c}delayed", "{c}other")
    probe.delete(*keys)
    probe.zadd(keys[1], {f"e{i}": 2e9 + i for i in range(100)})
    results: list[tuple[str, float]] = []
    for name, body in IN_LUA.items():
        script = f"for _ = 1, {IN_LUA_CALLS} do\n{body}\nend\nreturn 1"
        sha = probe.script_load(script)
        times = []
        for _ in range(max(1, rounds)):
            before = server_cpu_seconds(probe)
            probe.evalsha(sha, len(keys), *keys)
            times.append((server_cpu_seconds(probe) - before) / IN_LUA_CALLS * 1e6)
        results.append((name, statistics.median(times)))
    probe.delete(*keys)
    probe.close()
    return results


def main(argv: list[str] | None = None) -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    server = RedisServer.started()
    try:
        table = rows(server, args.rounds)
        packed = packing(server, args.rounds)
        called = in_lua(server, args.rounds)
    finally:
        server.stop()
    print(f"{'operation (* the broker)':<52} {'server CPU µs':>14} {'wall µs':>10}")
    for name, cpu, wall in table:
        print(f"{name:<52} {cpu:>14,.1f} {wall:>10,.1f}")
    print()
    print(f"{'client work on 1,000 entries':<52} {'µs':>14}")
    for name, micros in packed:
        print(f"{name:<52} {micros:>14,.1f}")
    print()
    print(f"{'one redis.call inside a script':<64} {'server CPU µs':>14}")
    for name, micros in called:
        print(f"{name:<64} {micros:>14,.2f}")


if __name__ == "__main__":
    run_cli(main)
