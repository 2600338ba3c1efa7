"""``encode_all``/``decode_all``: the batch helpers producers and workers call.

A codec with ``SupportsBatchCoding`` is handed the whole batch; one without it
(a user's codec with only ``encode``/``decode``) is called per item, with the same
results: decode errors in place, an encode error raised.
"""

from __future__ import annotations

import pytest

from sergeant.errors import DecodeError, EncodeError
from sergeant.protocols import (
    Codec,
    SupportsBatchCoding,
    decode_all,
    encode_all,
)
from sergeant.task import Task


class OneByOne:
    """A codec with no batch methods: the task id is the payload."""

    name = "ids"

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, task: Task) -> bytes:
        self.calls += 1
        if task.id == "bad":
            raise EncodeError("cannot encode task 'bad'")
        return task.id.encode()

    def decode(self, data: bytes) -> Task:
        self.calls += 1
        if not data.startswith(b"t"):
            raise DecodeError(f"not a task: {data!r}")
        return Task(queue="q", id=data.decode(), created_at=1.0)


class Batched(OneByOne):
    """The same codec, taking batches: counts the batch calls."""

    def __init__(self) -> None:
        super().__init__()
        self.batches = 0

    def encode_many(self, tasks: list[Task]) -> list[bytes]:
        self.batches += 1
        return [self.encode(task) for task in tasks]

    def decode_many(self, payloads: list[bytes]) -> list[Task | DecodeError]:
        self.batches += 1
        return [
            self.decode(p) if p.startswith(b"t") else DecodeError("batch")
            for p in payloads
        ]


def test_a_codec_without_batches_is_called_per_item_with_errors_in_place() -> None:
    codec = OneByOne()
    assert isinstance(codec, Codec)
    assert not isinstance(codec, SupportsBatchCoding)

    decoded = decode_all(codec, [b"t1", b"junk", b"t2"])

    assert codec.calls == 3
    assert [getattr(item, "id", None) for item in decoded] == ["t1", None, "t2"]
    assert isinstance(decoded[1], DecodeError)
    assert str(decoded[1]) == "not a task: b'junk'"
    tasks = [Task(queue="q", id="t1"), Task(queue="q", id="t2")]
    assert encode_all(codec, tasks) == [b"t1", b"t2"]
    with pytest.raises(EncodeError, match="'bad'"):
        encode_all(codec, [tasks[0], Task(queue="q", id="bad")])


def test_a_codec_with_batches_gets_the_whole_batch_in_one_call() -> None:
    codec = Batched()
    assert isinstance(codec, SupportsBatchCoding)

    decoded = decode_all(codec, [b"t1", b"junk", b"t2"])
    encoded = encode_all(codec, [Task(queue="q", id="t3")])

    assert codec.batches == 2
    assert str(decoded[1]) == "batch"  # the codec's own answer, not a per-item call
    assert encoded == [b"t3"]
