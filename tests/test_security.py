"""Security end to end: nothing unpickled unverified, unsafe setups warned, no secrets.

- A planted pickle (its ``__reduce__`` creates a file) goes through a real worker
  loop on SQLite: with signing the file never appears and the payload is
  dead-lettered with a signature reason; without signing it does appear (the
  control that proves the check has teeth).
- The worker process entry (what ``sergeant supervise`` runs) warns when a worker
  unpickles unsigned payloads from a network broker.
- HMAC keys come from an environment variable or a file and never show in
  messages, reprs or logs.
- Broker URLs with passwords: a failing connection (unreachable, or refused
  credentials) never shows the password in the exception chain or the logs.
- TLS URLs (``rediss://``, ``mongodb+srv://``, ``tls=true``) reach the drivers:
  the built clients are set up for TLS (checked without connecting).
"""

from __future__ import annotations

import logging
import os
import pathlib
import pickle
import struct
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import mongomock
import pytest
import redis
from pymongo import srv_resolver
from sergeant.adapters.child import unsigned_pickle_warning
from sergeant.adapters.codecs import HmacSigner, MsgpackCodec, PickleCodec, ZlibCodec
from sergeant.adapters.executors.serial import SerialExecutor
from sergeant.adapters.mongo import MongoBroker
from sergeant.adapters.redis import RedisBroker, RetryPolicy
from sergeant.adapters.registry import broker_from_url
from sergeant.adapters.sqlite import SqliteBroker
from sergeant.adapters.watchdogs.null import NullWatchdog

from sergeant.config import Starvation, WorkerConfig
from sergeant.errors import (
    BrokerError,
    BrokerUnavailable,
    ConfigError,
    SignatureError,
)
from sergeant.event_log import EventLogger
from sergeant.task import Task
from sergeant.worker import Worker
from tests.support.redis_servers import RedisServer, free_port

REPO = pathlib.Path(__file__).resolve().parents[1]
KEY_HEX = "5e" * 16 + "c3" * 16
KEY = bytes.fromhex(KEY_HEX)
PASSWORD = "Pa55-w0rd-never-shown"
QUEUE = "secure"


class _Plant:
    """Unpickling this creates ``path``: stands in for an attacker's payload."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (self.path,))


class _Recorder(Worker):
    """Records the ``n`` of every task it runs; stops itself when the queue idles."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ran: list[int] = []

    def work(self, task: Task) -> None:
        self.ran.append(task.kwargs["n"])

    def on_starvation(self, time_with_no_tasks: float) -> None:
        self.request_stop()


def recorder(broker: Any, codec: Any, *, owner: str | None = None) -> _Recorder:
    """A worker on ``broker`` that stops after half a second without tasks."""
    return _Recorder(
        broker=broker,
        codec=codec,
        executor=SerialExecutor(),
        watchdog=NullWatchdog(),
        config=WorkerConfig(name=QUEUE, wait=0.05,
                            starvation=Starvation(time_with_no_tasks=0.5)),
        owner=owner,
    )  # fmt: skip


def redis_worker(*, owner: str) -> Worker:
    """A supervisor target: pickle on Redis, signed if ``$SEC_SIGNED`` is 1."""
    codec: Any = PickleCodec()
    if os.environ.get("SEC_SIGNED") == "1":
        codec = HmacSigner.from_env(PickleCodec(), "SEC_KEY")
    return recorder(RedisBroker.from_url(os.environ["SEC_REDIS"]), codec, owner=owner)


def messages(error: BaseException) -> str:
    """The text of ``error`` and of every exception chained to it."""
    parts: list[str] = []
    seen: BaseException | None = error
    while seen is not None and len(parts) < 20:
        parts += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


# -- nothing is unpickled before its HMAC is verified --------------------------------


def frame(flags: int, body: bytes) -> bytes:
    """A pickle payload with a hand-made header (``flags`` 1: claims to be signed)."""
    return struct.pack(">2sBBBB", b"SG", 1, 1, 0, flags) + body


@pytest.mark.parametrize(
    ("mac", "signing", "planted_runs", "reason"),
    [
        pytest.param(None, True, False, "payload is not signed", id="missing-mac"),
        pytest.param(
            b"\x00" * 32, True, False, "signature does not match", id="wrong-mac"
        ),
        pytest.param(None, False, True, "undecodable payload", id="unsigned-control"),
    ],
)
def test_a_planted_pickle_through_a_live_worker_runs_only_without_signing(
    tmp_path: pathlib.Path,
    mac: bytes | None,
    signing: bool,
    planted_runs: bool,
    reason: str,
) -> None:
    """A planted pickle pushed between good tasks: a signed worker dead-letters it
    with a signature reason and the file never appears; an unsigned one runs it."""
    path = tmp_path / "pwned"
    body = pickle.dumps(_Plant(path), 5)
    planted = frame(0, body) if mac is None else frame(1, mac + body)
    codec: Any = HmacSigner(PickleCodec(), key=KEY) if signing else PickleCodec()
    broker = SqliteBroker(str(tmp_path / "broker.db"))
    broker.push(QUEUE, [codec.encode(Task(kwargs={"n": 1}, queue=QUEUE))])
    broker.push(QUEUE, [planted])
    broker.push(QUEUE, [codec.encode(Task(kwargs={"n": 2}, queue=QUEUE))])

    worker = recorder(broker, codec)
    worker.run()
    letters = broker.dead_letters(QUEUE)
    broker.close()

    assert path.exists() is planted_runs
    assert worker.ran == [1, 2]
    assert [letter.payload for letter in letters] == [planted]
    assert reason in letters[0].reason


# -- the warning for unsigned pickle on a network broker ---------------------------


@pytest.mark.parametrize(
    ("broker", "codec", "warns"),
    [
        ("redis", PickleCodec(), True),
        ("redis", ZlibCodec(PickleCodec()), True),
        ("mongo", PickleCodec(), True),
        ("redis", HmacSigner(PickleCodec(), key=KEY), False),
        ("redis", MsgpackCodec(), False),
        ("sqlite", PickleCodec(), False),
        ("redis-subclass", PickleCodec(), True),
    ],
)
def test_unsigned_pickle_warning_only_for_pickle_unsigned_on_a_network_broker(
    tmp_path: pathlib.Path, broker: str, codec: Any, warns: bool
) -> None:
    """The check names the codec and the fix for unsigned pickle on Redis or Mongo,
    and stays silent for signed pickle, other serializers and local brokers."""
    made: Any = {
        "redis": lambda: RedisBroker.from_url(f"redis://127.0.0.1:{free_port()}/0"),
        "mongo": lambda: MongoBroker(mongomock.MongoClient()),
        "sqlite": lambda: SqliteBroker(str(tmp_path / "b.db")),
        # An application's own subclass is still a network broker.
        "redis-subclass": lambda: type("AppBroker", (RedisBroker,), {}).from_url(
            f"redis://127.0.0.1:{free_port()}/0"
        ),
    }[broker]()
    worker = recorder(made, codec)

    warning = unsigned_pickle_warning(worker)
    made.close()

    assert (warning is not None) is warns
    if warns:
        assert codec.name in warning
        assert "HmacSigner" in warning


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.parametrize(("signed", "warns"), [(False, True), (True, False)])
def test_the_supervise_command_warns_about_unsigned_pickle_on_redis(
    redis_server: RedisServer, signed: bool, warns: bool
) -> None:
    """``sergeant supervise`` on an unsigned pickle worker over Redis prints the
    warning once per worker process; with a signed codec it does not."""
    env = {**os.environ, "SEC_REDIS": redis_server.url, "SEC_SIGNED": str(int(signed)),
           "SEC_KEY": KEY_HEX}  # fmt: skip
    target = "tests.test_security:redis_worker"
    command = [sys.executable, "-m", "sergeant.adapters.cli", "supervise", target,
               "--log-level", "WARNING"]  # fmt: skip

    result = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert result.stderr.count("decodes unsigned pickle") == int(warns)
    assert KEY_HEX not in result.stderr


# -- keys from the environment or a file, never shown ------------------------------


def test_a_key_from_the_environment_signs_like_the_raw_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """from_env reads a hex key (whitespace ignored) and hides it in its repr."""
    monkeypatch.setenv("SERGEANT_HMAC_KEY", f"  {KEY_HEX}\n")
    task = Task(kwargs={"n": 1}, queue=QUEUE)

    signer = HmacSigner.from_env(PickleCodec())

    assert HmacSigner(PickleCodec(), key=KEY).decode(signer.encode(task)) == task
    assert KEY_HEX not in repr(signer)


def test_a_key_from_a_file_signs_like_the_raw_key(tmp_path: pathlib.Path) -> None:
    """from_file reads a hex key with a trailing newline, as a mounted secret has."""
    path = tmp_path / "key"
    path.write_text(KEY_HEX + "\n")
    task = Task(kwargs={"n": 1}, queue=QUEUE)

    signer = HmacSigner.from_file(PickleCodec(), path)

    assert HmacSigner(PickleCodec(), key=KEY).decode(signer.encode(task)) == task


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "SERGEANT_HMAC_KEY is not set"),
        ("not-hex-but-a-Secret-Phrase", "not a hex string"),
        ("ab" * 15, "is 15 bytes, at least 16"),
    ],
)
def test_a_bad_key_in_the_environment_is_named_but_not_shown(
    monkeypatch: pytest.MonkeyPatch, value: str | None, message: str
) -> None:
    """A missing, non-hex or short key is a ConfigError that names the variable
    and never contains the value."""
    if value is None:
        monkeypatch.delenv("SERGEANT_HMAC_KEY", raising=False)
    else:
        monkeypatch.setenv("SERGEANT_HMAC_KEY", value)

    with pytest.raises(ConfigError) as caught:
        HmacSigner.from_env(PickleCodec())

    assert message in str(caught.value)
    assert "SERGEANT_HMAC_KEY" in str(caught.value)
    assert value is None or value not in messages(caught.value)


@pytest.mark.parametrize("content", [None, "Secret-Phrase-in-plain-text\n", "abcd"])
def test_a_bad_key_file_is_named_but_not_shown(
    tmp_path: pathlib.Path, content: str | None
) -> None:
    """A missing, non-hex or short key file is a ConfigError naming the file only."""
    path = tmp_path / "key"
    if content is not None:
        path.write_text(content)

    with pytest.raises(ConfigError) as caught:
        HmacSigner.from_file(PickleCodec(), path)

    assert str(path) in str(caught.value)
    assert content is None or content.strip() not in messages(caught.value)


# -- key rotation: sign with one key, accept others -------------------------------

NEW_KEY = bytes.fromhex("a7" * 32)


def test_a_rotating_signer_signs_with_its_key_and_still_accepts_the_old_one() -> None:
    """During a rotation, payloads signed with the old key still decode, and what
    the rotating signer writes carries the new key only."""
    task = Task(kwargs={"n": 1}, queue=QUEUE)
    old_only = HmacSigner(PickleCodec(), key=KEY)
    new_only = HmacSigner(PickleCodec(), key=NEW_KEY)
    rotating = HmacSigner(PickleCodec(), key=NEW_KEY, also_accepted=[KEY])

    written = rotating.encode(task)

    assert rotating.decode(old_only.encode(task)) == task
    assert rotating.decode(written) == task
    assert new_only.decode(written) == task
    with pytest.raises(SignatureError, match="does not match"):
        old_only.decode(written)


def test_a_key_neither_signing_nor_accepted_is_still_refused() -> None:
    """Accepting a second key does not open the door to a third."""
    rotating = HmacSigner(PickleCodec(), key=NEW_KEY, also_accepted=[KEY])
    forged = HmacSigner(PickleCodec(), key=b"f" * 32).encode(Task(queue=QUEUE))

    with pytest.raises(SignatureError, match="does not match"):
        rotating.decode(forged)


def test_a_bad_accepted_key_is_named_by_its_position() -> None:
    """A short or non-bytes accepted key fails at construction, naming which one."""
    with pytest.raises(ConfigError, match=r"also_accepted\[1\] must be at least 16"):
        HmacSigner(PickleCodec(), key=KEY, also_accepted=[NEW_KEY, b"short"])
    with pytest.raises(ConfigError, match=r"also_accepted\[0\] must be bytes"):
        HmacSigner(PickleCodec(), key=KEY, also_accepted=[NEW_KEY.hex()])  # type: ignore[list-item]


def test_rotation_keys_given_as_a_generator_still_rotate() -> None:
    """also_accepted is taken once, as a tuple: a generator was spent checking
    the keys, leaving none to accept (rotation silently off)."""
    old_payload = HmacSigner(PickleCodec(), key=KEY).encode(Task(kwargs={"n": 1}))
    rotating = HmacSigner(
        PickleCodec(), key=NEW_KEY, also_accepted=(key for key in [KEY])
    )

    assert rotating.decode(old_payload).kwargs == {"n": 1}
    with pytest.raises(ConfigError, match="also_accepted must be a sequence"):
        HmacSigner(PickleCodec(), key=NEW_KEY, also_accepted=None)  # type: ignore[arg-type]


def test_rotation_keys_come_from_the_environment_and_from_a_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    """SERGEANT_HMAC_ALSO_ACCEPTED (comma-separated hex) and the key file's further
    lines are accepted keys; the first key signs; none of them shows in a repr."""
    task = Task(kwargs={"n": 1}, queue=QUEUE)
    other = bytes.fromhex("3c" * 32)
    monkeypatch.setenv("SERGEANT_HMAC_KEY", NEW_KEY.hex())
    monkeypatch.setenv("SERGEANT_HMAC_ALSO_ACCEPTED", f" {KEY_HEX} ,{other.hex()}")
    path = tmp_path / "keys"
    path.write_text(f"{NEW_KEY.hex()}\n\n{KEY_HEX}\n")

    for signer in (
        HmacSigner.from_env(PickleCodec()),
        HmacSigner.from_file(PickleCodec(), path),
    ):
        assert signer.decode(HmacSigner(PickleCodec(), key=KEY).encode(task)) == task
        assert (
            HmacSigner(PickleCodec(), key=NEW_KEY).decode(signer.encode(task)) == task
        )
        assert KEY_HEX not in repr(signer)
        assert NEW_KEY.hex() not in repr(signer)
    from_env = HmacSigner.from_env(PickleCodec())
    assert from_env.decode(HmacSigner(PickleCodec(), key=other).encode(task)) == task


def test_a_key_file_without_a_key_is_a_config_error(tmp_path: pathlib.Path) -> None:
    """A key file holding only blank lines names the file and says it has no key."""
    path = tmp_path / "keys"
    path.write_text("\n  \n")

    with pytest.raises(ConfigError, match="holds no HMAC key"):
        HmacSigner.from_file(PickleCodec(), path)


def test_the_key_never_reaches_the_logs(
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A worker with a key from the environment, logging every event at DEBUG,
    through good and forged payloads: the key appears in no log line."""
    monkeypatch.setenv("SERGEANT_HMAC_KEY", KEY_HEX)
    caplog.set_level(logging.DEBUG)
    codec = HmacSigner.from_env(PickleCodec())
    broker = SqliteBroker(str(tmp_path / "broker.db"))
    forged = HmacSigner(PickleCodec(), key=b"x" * 32)
    broker.push(QUEUE, [codec.encode(Task(kwargs={"n": 1}, queue=QUEUE)),
                        forged.encode(Task(kwargs={"n": 2}, queue=QUEUE))])  # fmt: skip
    worker = recorder(broker, codec)
    EventLogger(worker)

    worker.run()
    reasons = [letter.reason for letter in broker.dead_letters(QUEUE)]
    broker.close()

    assert worker.ran == [1]
    assert len(reasons) == 1
    assert len(caplog.records) >= 3
    assert KEY_HEX not in caplog.text
    assert KEY_HEX not in repr(worker.codec) + " ".join(reasons)


# -- passwords in broker URLs never shown ----------------------------------------


@pytest.fixture
def password_server(tmp_path: pathlib.Path) -> Iterator[RedisServer]:
    """A private redis-server that requires ``PASSWORD``."""
    server = RedisServer(tmp_path / "auth")
    try:
        server.start()  # without a password first: its readiness probe sends none
        admin = server.client()
        admin.config_set("requirepass", PASSWORD)
        admin.close()
        yield server
    finally:
        server.stop()


def test_an_unreachable_redis_url_never_shows_its_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nothing listens: the BrokerUnavailable chain and the outage log line show
    the host, not the password."""
    caplog.set_level(logging.DEBUG)
    url = f"redis://user:{PASSWORD}@127.0.0.1:{free_port()}/0"
    broker = RedisBroker.from_url(url, retry=RetryPolicy(budget=0.3, base=0.02))

    with pytest.raises(BrokerUnavailable) as caught:
        broker.push(QUEUE, [b"x"])
    broker.close()

    assert "127.0.0.1" in str(caught.value)
    assert PASSWORD not in messages(caught.value)
    assert "unreachable" in caplog.text
    assert PASSWORD not in caplog.text


@pytest.mark.redis
def test_a_refused_redis_password_is_never_shown(
    password_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong password is a BrokerError without it; the right one works."""
    caplog.set_level(logging.DEBUG)
    wrong = "Wr0ng-" + PASSWORD
    port = password_server.port
    refused = broker_from_url(f"redis://:{wrong}@127.0.0.1:{port}/0")
    accepted = broker_from_url(f"redis://:{PASSWORD}@127.0.0.1:{port}/0")

    with pytest.raises(BrokerError) as caught:
        refused.push(QUEUE, [b"x"])
    accepted.push(QUEUE, [b"x"])
    length = accepted.lengths(QUEUE).ready
    refused.close()
    accepted.close()

    assert length == 1
    assert wrong not in messages(caught.value)
    assert PASSWORD not in messages(caught.value)
    assert PASSWORD not in caplog.text


def test_an_unreachable_mongo_url_never_shows_its_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nothing listens: the BrokerUnavailable chain and the log show no password."""
    caplog.set_level(logging.DEBUG)
    url = (
        f"mongodb://user:{PASSWORD}@127.0.0.1:{free_port()}/jobs"
        "?serverSelectionTimeoutMS=200&connectTimeoutMS=200"
    )
    broker = MongoBroker.from_url(url, retry_budget=0.3)

    with pytest.raises(BrokerUnavailable) as caught:
        broker.push(QUEUE, [b"x"])
    broker.close()

    assert "127.0.0.1" in str(caught.value)
    assert PASSWORD not in messages(caught.value)
    assert "unreachable" in caplog.text
    assert PASSWORD not in caplog.text


@pytest.mark.slow
def test_the_command_never_shows_a_mongo_password() -> None:
    """``sergeant queues`` on an unreachable MongoDB URL: exit 1, one line, no
    password."""
    url = (
        f"mongodb://user:{PASSWORD}@127.0.0.1:{free_port()}/jobs"
        "?serverSelectionTimeoutMS=200&connectTimeoutMS=200"
    )
    env = {k: v for k, v in os.environ.items() if k != "SERGEANT_BROKER"}

    result = subprocess.run(
        [sys.executable, "-m", "sergeant.adapters.cli", "queues", "--broker", url],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert result.returncode == 1
    assert result.stderr.startswith("sergeant: error: ")
    assert PASSWORD not in result.stderr + result.stdout


# -- TLS URLs reach the drivers ------------------------------------------------------


def test_rediss_urls_build_tls_clients() -> None:
    """rediss:// (one node or several) gives SSL connections with the URL's options;
    redis:// does not (built without connecting)."""
    port = free_port()
    tls = broker_from_url(
        f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_cert_reqs=required,"
        f"rediss://127.0.0.1:{port}/1"
    )
    plain = broker_from_url(f"redis://127.0.0.1:{port}/0")

    pools = [node.client.connection_pool for node in tls._nodes]  # type: ignore[attr-defined]
    plain_pool = plain._nodes[0].client.connection_pool  # type: ignore[attr-defined]
    tls.close()
    plain.close()

    assert len(pools) == 2
    assert all(p.connection_class is redis.SSLConnection for p in pools)
    assert pools[0].connection_kwargs["ssl_cert_reqs"] == "required"
    assert plain_pool.connection_class is redis.Connection


def test_mongodb_tls_true_reaches_the_client() -> None:
    """mongodb://...?tls=true gives a client with an SSL context; without, none."""
    port = free_port()

    tls = broker_from_url(f"mongodb://127.0.0.1:{port}/jobs?tls=true")
    plain = broker_from_url(f"mongodb://127.0.0.1:{port}/jobs")
    contexts = [b._client.options.pool_options._ssl_context for b in (tls, plain)]  # type: ignore[attr-defined]
    tls.close()
    plain.close()

    assert contexts[0] is not None
    assert contexts[1] is None


def test_mongodb_srv_urls_reach_the_client_with_tls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """mongodb+srv:// resolves its hosts through DNS (stubbed here) and turns TLS
    on, as the driver's SRV rules say; the database comes from the path."""
    hosts = [("db0.example.test", 27017), ("db1.example.test", 27017)]
    resolver = srv_resolver._SrvResolver
    monkeypatch.setattr(resolver, "get_hosts", lambda self: hosts)
    monkeypatch.setattr(resolver, "get_options", lambda self: None)
    monkeypatch.setattr(resolver, "get_hosts_and_min_ttl", lambda self: (hosts, 60))

    broker = broker_from_url(
        f"mongodb+srv://user:{PASSWORD}@cluster.example.test/jobs?connect=false"
    )
    client = broker._client  # type: ignore[attr-defined]
    seeds = set(client.topology_description.server_descriptions())
    context = client.options.pool_options._ssl_context
    database = broker._tasks.database.name  # type: ignore[attr-defined]
    broker.close()

    assert context is not None
    assert seeds == set(hosts)
    assert database == "jobs"
