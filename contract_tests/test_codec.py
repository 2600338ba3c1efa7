"""The Codec contract: every composition in ``CODECS`` must pass it unchanged.

A codec round-trips every Task field and every kwarg kind its row claims, and
whatever bytes it is handed, decoding returns a Task or raises ``DecodeError``,
never another exception. Signed compositions reject every tampered payload. A
batch (``encode_many``/``decode_many``) codes exactly as its items one by one. The
sample kinds below are the vocabulary the rows' claims are written in.
"""

from __future__ import annotations

import collections
import datetime
import math
import random
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sergeant.errors import (
    DecodeError,
    EncodeError,
    ForeignPayloadError,
    SignatureError,
)
from sergeant.protocols import SupportsBatchCoding
from sergeant.task import Priority, Task

# kind -> a kwarg value of that kind; rows in CODECS claim the kinds they carry.
SAMPLES: dict[str, Any] = {
    "none": None,
    "bool": True,
    "int": -(2**63),
    "bigint": 2**100,
    "float": 3.141592653589793,
    "inf": [math.inf, -math.inf],
    "str": "ünïcødé ✓ 🚀, and an empty one:",
    "bytes": b"\x00\xff binary \x80",
    "list": [1, "two", 3.5, None, [False]],
    "dict": {"a": {"b": [1, 2]}, "": "empty key"},
    "int_keys": {1: "one", -2: {3: "three"}},
    "tuple": (1, "a", (2.5,)),
    "set": {1, 2, 3},
    "datetime": datetime.datetime(2024, 2, 29, 12, 30, tzinfo=datetime.UTC),
}
CLAIMS = frozenset(SAMPLES) | {"signed"}

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def full_task(kwargs: dict[str, Any] | None = None) -> Task:
    """A task whose every field differs from its default."""
    return Task(
        kwargs={"url": "https://example.com/x", "n": 1} if kwargs is None else kwargs,
        queue="emails",
        id="task-0001",
        trace_id="trace-0001",
        created_at=1_700_000_000.123456,
        attempt=3,
        priority=Priority.HIGH,
        eta=1_700_000_100.5,
        timeout=30.25,
    )


def same(left: Any, right: Any) -> bool:
    """Equal, and of the same types all the way down (``1 == True == 1.0`` is not)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        right_keys = {key: key for key in right}
        return len(left) == len(right) and all(
            key in right_keys and same(key, right_keys[key]) and same(value, right[key])
            for key, value in left.items()
        )
    if isinstance(left, list | tuple):
        return len(left) == len(right) and all(map(same, left, right))
    return bool(left == right)


def assert_same_task(decoded: Task, task: Task) -> None:
    """``decoded`` is ``task``, field by field, with exact types."""
    assert decoded == task
    assert same(decoded.kwargs, task.kwargs)
    assert decoded.priority is task.priority
    for field in ("queue", "id", "trace_id", "created_at", "attempt", "eta", "timeout"):
        assert same(getattr(decoded, field), getattr(task, field)), field


def outcome(codec: Any, data: bytes) -> str:
    """What decoding ``data`` did: "task", "decode-error", or the foreign exception."""
    try:
        result = codec.decode(data)
    except DecodeError:
        return "decode-error"
    except Exception as error:  # the contract violation this reports
        return f"raised {error!r}"
    return "task" if isinstance(result, Task) else f"returned {result!r}"


def kwargs_strategy(claims: frozenset[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Generated kwargs made only of the kinds in ``claims``."""
    leaves: dict[str, st.SearchStrategy[Any]] = {
        "none": st.none(),
        "bool": st.booleans(),
        "int": st.integers(-(2**63), 2**63 - 1),
        "bigint": st.integers(),
        "float": st.floats(allow_nan=False, allow_infinity="inf" in claims),
        "str": st.text(max_size=20),
        "bytes": st.binary(max_size=20),
        "set": st.sets(st.integers() | st.text(max_size=5), max_size=4),
        "datetime": st.datetimes(),
    }
    base = st.one_of([strategy for kind, strategy in leaves.items() if kind in claims])

    def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        options = [st.lists(children, max_size=4)]  # every codec carries lists
        if "tuple" in claims:
            options.append(st.lists(children, max_size=4).map(tuple))
        if "dict" in claims:
            options.append(st.dictionaries(st.text(max_size=8), children, max_size=4))
        if "int_keys" in claims:
            options.append(st.dictionaries(st.integers(0, 2**32), children, max_size=3))
        return st.one_of(options)

    values = st.recursive(base, containers, max_leaves=10)
    return st.dictionaries(st.text(max_size=12), values, max_size=5)


def tasks_strategy(claims: frozenset[str]) -> st.SearchStrategy[Task]:
    """Generated tasks: every field varies, kwargs within ``claims``."""
    times = st.floats(0, 4e9, allow_nan=False)
    return st.builds(
        Task,
        kwargs=kwargs_strategy(claims),
        queue=st.text(max_size=20),
        id=st.text(min_size=1, max_size=40),
        trace_id=st.text(max_size=40),
        created_at=times,
        attempt=st.integers(0, 2**31),
        priority=st.sampled_from(Priority),
        eta=st.none() | times,
        timeout=st.none() | st.floats(0, 1e6, allow_nan=False),
    )


class TestCodecContract:
    def test_claims_use_the_sample_vocabulary(
        self, codec_claims: frozenset[str]
    ) -> None:
        """A row claims only sample kinds this suite knows (and "signed")."""
        unknown = codec_claims - CLAIMS

        assert not unknown
        assert {"none", "bool", "int", "float", "str", "list"} <= codec_claims

    def test_encodes_to_bytes(self, codec: Any) -> None:
        """encode returns bytes."""
        payload = codec.encode(full_task())

        assert type(payload) is bytes

    def test_round_trips_every_task_field(self, codec: Any) -> None:
        """Every field comes back equal and of the same type, priority as the enum."""
        task = full_task()

        decoded = codec.decode(codec.encode(task))

        assert_same_task(decoded, task)

    def test_round_trips_a_task_with_default_fields(self, codec: Any) -> None:
        """Empty kwargs, NORMAL priority, no eta and no timeout survive as such."""
        task = Task(queue="q")

        decoded = codec.decode(codec.encode(task))

        assert_same_task(decoded, task)
        assert decoded.eta is None
        assert decoded.timeout is None

    @pytest.mark.parametrize("kind", sorted(SAMPLES))
    def test_carries_each_claimed_kind_and_only_refuses_others_cleanly(
        self, codec: Any, codec_claims: frozenset[str], kind: str
    ) -> None:
        """A claimed kind round-trips exactly; any other encodes with EncodeError or
        decodes to some task."""
        task = full_task({"value": SAMPLES[kind]})

        try:
            decoded = codec.decode(codec.encode(task))
        except EncodeError:
            decoded = None

        if kind in codec_claims:
            assert decoded is not None, f"{codec.name} refused claimed kind {kind}"
            assert_same_task(decoded, task)
        else:
            assert decoded is None or isinstance(decoded, Task)

    def test_refuses_a_kwarg_no_serializer_can_hold(self, codec: Any) -> None:
        """A kwarg that cannot be serialized (a lambda) raises EncodeError."""
        task = full_task({"callback": lambda: None})

        with pytest.raises(EncodeError):
            codec.encode(task)

    def test_mapping_kwargs_come_back_as_a_plain_dict(self, codec: Any) -> None:
        """kwargs given as a dict subclass decode as an equal plain dict."""
        task = full_task(collections.OrderedDict(b=2, a=1))

        decoded = codec.decode(codec.encode(task))

        assert type(decoded.kwargs) is dict
        assert decoded.kwargs == {"b": 2, "a": 1}

    @pytest.mark.parametrize("priority", [5, -1, "high", None])
    def test_refuses_a_priority_outside_the_enum(
        self, codec: Any, priority: Any
    ) -> None:
        """A task whose priority is not a Priority raises EncodeError, not a payload
        that nobody could decode."""
        task = attrs.evolve(full_task(), priority=priority)

        with pytest.raises(EncodeError, match="priority"):
            codec.encode(task)

    def test_rejects_every_truncation(self, codec: Any) -> None:
        """Every proper prefix of a real payload, even empty, raises DecodeError."""
        payload = codec.encode(full_task())

        results = {n: outcome(codec, payload[:n]) for n in range(len(payload))}

        assert {n: r for n, r in results.items() if r != "decode-error"} == {}

    def test_rejects_random_bytes(self, codec: Any) -> None:
        """Random byte strings of many lengths raise DecodeError."""
        rng = random.Random(20240229)
        blobs = [rng.randbytes(rng.randrange(0, 300)) for _ in range(300)]

        results = [outcome(codec, blob) for blob in blobs]

        assert set(results) == {"decode-error"}

    def test_a_payload_that_is_not_bytes_is_a_decode_error(self, codec: Any) -> None:
        """None or a number given as a payload: DecodeError, alone or in a batch
        (where the good payloads still decode)."""
        good = codec.encode(Task(kwargs={"n": 1}, queue="q"))

        results = [outcome(codec, bad) for bad in (None, 42, "text")]
        batch = codec.decode_many([good, None, good])

        assert results == ["decode-error"] * 3
        assert [type(x).__name__ for x in batch][::2] == ["Task", "Task"]
        assert isinstance(batch[1], DecodeError)

    def test_rejects_a_payload_written_by_another_codec(
        self, codec: Any, foreign_codec: Any, codec_claims: frozenset[str]
    ) -> None:
        """Another composition's payload raises ForeignPayloadError naming both (a
        signed codec may say SignatureError when the payload is merely unsigned)."""
        payload = foreign_codec.encode(full_task({"n": 1, "s": "text"}))
        expected = (
            (ForeignPayloadError, SignatureError)
            if "signed" in codec_claims
            else ForeignPayloadError
        )

        with pytest.raises(expected) as caught:
            codec.decode(payload)

        assert foreign_codec.name != codec.name
        assert foreign_codec.name in str(caught.value)
        assert codec.name in str(caught.value)

    def test_single_byte_flips_never_escape_decode_error(
        self, codec: Any, codec_claims: frozenset[str]
    ) -> None:
        """Flipping any one byte raises DecodeError or, unless the codec is signed,
        yields some task; nothing else happens."""
        payload = codec.encode(full_task())
        allowed = (
            {"decode-error"} if "signed" in codec_claims else {"decode-error", "task"}
        )

        results = {}
        for index in range(len(payload)):
            for mask in (0x01, 0x80, 0xFF):
                flipped = bytearray(payload)
                flipped[index] ^= mask
                results[index, mask] = outcome(codec, bytes(flipped))

        assert {at: r for at, r in results.items() if r not in allowed} == {}

    @FUZZ
    @given(data=st.data())
    def test_round_trips_generated_tasks(
        self, codec: Any, codec_claims: frozenset[str], data: st.DataObject
    ) -> None:
        """Any task whose kwargs use claimed kinds comes back identical."""
        task = data.draw(tasks_strategy(codec_claims))

        decoded = codec.decode(codec.encode(task))

        assert_same_task(decoded, task)

    @FUZZ
    @given(blob=st.binary(max_size=400))
    def test_decoding_arbitrary_bytes_yields_a_task_or_decode_error(
        self, codec: Any, blob: bytes
    ) -> None:
        """Decoding arbitrary bytes returns a Task or raises DecodeError."""
        result = outcome(codec, blob)

        assert result in {"task", "decode-error"}

    @FUZZ
    @given(cut=st.integers(0, 1000), tail=st.binary(max_size=200))
    def test_decoding_a_real_payload_with_a_forged_tail_never_escapes(
        self, codec: Any, codec_claims: frozenset[str], cut: int, tail: bytes
    ) -> None:
        """A real payload cut anywhere and followed by arbitrary bytes decodes to a
        Task or raises DecodeError (signed: always DecodeError unless unchanged)."""
        payload = codec.encode(full_task())
        forged = payload[:cut] + tail

        result = outcome(codec, forged)

        if "signed" in codec_claims and forged != payload:
            assert result == "decode-error"
        else:
            assert result in {"task", "decode-error"}

    # -- batches (SupportsBatchCoding): what producers and workers call ----------

    def test_can_code_batches(self, codec: Any) -> None:
        """Every composition takes batches (``SupportsBatchCoding``)."""
        assert isinstance(codec, SupportsBatchCoding)

    def test_encodes_a_batch_as_it_encodes_each_task(self, codec: Any) -> None:
        """``encode_many`` gives, in order, the bytes ``encode`` gives per task."""
        tasks = [full_task(), Task(queue="q"), full_task({"n": 2, "s": "text"})]

        assert codec.encode_many(tasks) == [codec.encode(task) for task in tasks]
        assert codec.encode_many([]) == []

    def test_a_batch_with_an_unencodable_task_fails_as_that_task_would(
        self, codec: Any
    ) -> None:
        """One task the serializer refuses fails the whole batch, with the error
        ``encode`` gives for that task (it names the kwarg)."""
        bad = full_task({"callback": lambda: None})
        with pytest.raises(EncodeError) as alone:
            codec.encode(bad)

        with pytest.raises(EncodeError) as batched:
            codec.encode_many([full_task(), bad, Task(queue="q")])

        assert str(batched.value) == str(alone.value)
        assert "callback" in str(batched.value)

    def test_decodes_a_batch_as_it_decodes_each_payload(
        self, codec: Any, foreign_codec: Any
    ) -> None:
        """``decode_many`` gives each payload's task or, in its place, the error
        ``decode`` raises for it; one bad payload costs no other."""
        good = codec.encode(full_task())
        payloads = [
            good,
            good[:-3],  # truncated
            foreign_codec.encode(full_task()),
            b"not a payload at all",
            b"",
            codec.encode(Task(queue="q")),
        ]

        assert_decoded_each(codec, payloads)
        assert codec.decode_many([]) == []

    @FUZZ
    @given(blobs=st.lists(st.binary(max_size=200), max_size=4), keep=st.booleans())
    def test_decoding_arbitrary_batches_matches_decoding_each(
        self, codec: Any, blobs: list[bytes], keep: bool
    ) -> None:
        """Whatever the bytes, a batch decodes as its payloads do one by one."""
        payloads = [codec.encode(full_task()), *blobs] if keep else blobs

        assert_decoded_each(codec, payloads)


def assert_decoded_each(codec: Any, payloads: list[bytes]) -> None:
    """``codec.decode_many(payloads)`` agrees with ``codec.decode`` per payload."""
    batch = codec.decode_many(payloads)

    assert len(batch) == len(payloads)
    for payload, got in zip(payloads, batch, strict=True):
        try:
            expected: Task | DecodeError = codec.decode(payload)
        except DecodeError as error:
            expected = error
        if isinstance(expected, Task):
            assert isinstance(got, Task), got
            assert_same_task(got, expected)
        else:
            assert type(got) is type(expected), (got, expected)
            assert str(got) == str(expected)
