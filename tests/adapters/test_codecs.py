"""Codec behaviour beyond the shared contract: the header layout, error messages,
signing before decoding, composition rules and what each serializer carries."""

from __future__ import annotations

import hashlib
import hmac
import pathlib
import pickle
import struct
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import pytest
from sergeant.adapters.codecs import (
    Bz2Codec,
    GzipCodec,
    HmacSigner,
    JsonCodec,
    LzmaCodec,
    PickleCodec,
    ZlibCodec,
)
from sergeant.adapters.codecs._wire import Failed
from sergeant.adapters.codecs.msgpack import MsgpackCodec

from sergeant.errors import (
    ConfigError,
    DecodeError,
    EncodeError,
    ForeignPayloadError,
    SignatureError,
)
from sergeant.task import Priority, Task

KEY = b"0123456789abcdef0123456789abcdef"
OTHER_KEY = b"fedcba9876543210fedcba9876543210"


def frame(serializer: int, compressor: int, flags: int, body: bytes) -> bytes:
    """A payload with a hand-made header: magic, version 1, ids, flags."""
    return struct.pack(">2sBBBB", b"SG", 1, serializer, compressor, flags) + body


def sample() -> Task:
    """A small task with non-default fields."""
    return Task(
        kwargs={"url": "https://example.com/x", "n": 1},
        queue="q",
        id="task-1",
        created_at=1_700_000_000.0,
        attempt=2,
    )


class _Plant:
    """Unpickling this creates ``path``: stands in for an attacker's payload."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (self.path,))


class _SpyPickle(PickleCodec):
    """A PickleCodec that records every body it is asked to decode."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []

    def load_records(self, bodies: Sequence[bytes | Failed]) -> list[object]:
        self.bodies += [body for body in bodies if isinstance(body, bytes)]
        return super().load_records(bodies)


@pytest.mark.parametrize(
    ("codec", "header", "name"),
    [
        pytest.param(PickleCodec(), b"SG\x01\x01\x00\x00", "pickle", id="pickle"),
        pytest.param(MsgpackCodec(), b"SG\x01\x02\x00\x00", "msgpack", id="msgpack"),
        pytest.param(JsonCodec(), b"SG\x01\x03\x00\x00", "json", id="json"),
        pytest.param(
            ZlibCodec(MsgpackCodec()), b"SG\x01\x02\x01\x00", "msgpack+zlib", id="zlib"
        ),
        pytest.param(
            GzipCodec(JsonCodec()), b"SG\x01\x03\x02\x00", "json+gzip", id="gzip"
        ),
        pytest.param(
            Bz2Codec(PickleCodec()), b"SG\x01\x01\x03\x00", "pickle+bz2", id="bz2"
        ),
        pytest.param(
            LzmaCodec(PickleCodec()), b"SG\x01\x01\x04\x00", "pickle+lzma", id="lzma"
        ),
        pytest.param(
            HmacSigner(LzmaCodec(JsonCodec()), key=KEY),
            b"SG\x01\x03\x04\x01",
            "json+lzma+hmac",
            id="hmac",
        ),
    ],
)
def test_header_layout_and_name(codec: Any, header: bytes, name: str) -> None:
    """A payload starts with magic, version, serializer, compressor and flags bytes,
    and the codec's name lists its layers inner first."""
    payload = codec.encode(sample())

    assert payload[:6] == header
    assert codec.name == name


def test_signature_is_hmac_sha256_of_header_and_body() -> None:
    """The 32 bytes after a signed header are HMAC-SHA256(key, header + body)."""
    payload = HmacSigner(PickleCodec(), key=KEY).encode(sample())

    header, mac, body = payload[:6], payload[6:38], payload[38:]

    assert mac == hmac.digest(KEY, header + body, hashlib.sha256)
    assert PickleCodec().decode(b"SG\x01\x01\x00\x00" + body) == sample()


@pytest.mark.parametrize(
    ("writer", "reader", "message"),
    [
        (
            ZlibCodec(MsgpackCodec()),
            LzmaCodec(PickleCodec()),
            "payload was written by msgpack+zlib, this codec reads pickle+lzma",
        ),
        (
            JsonCodec(),
            PickleCodec(),
            "payload was written by json, this codec reads pickle",
        ),
        (
            HmacSigner(PickleCodec(), key=KEY),
            PickleCodec(),
            "payload was written by pickle+hmac, this codec reads pickle",
        ),
        (
            MsgpackCodec(),
            HmacSigner(ZlibCodec(PickleCodec()), key=KEY),
            "payload was written by msgpack, this codec reads pickle+zlib+hmac",
        ),
    ],
)
def test_foreign_payload_error_names_both_codecs(
    writer: Any, reader: Any, message: str
) -> None:
    """Decoding another composition's payload says who wrote it and what reads it."""
    payload = writer.encode(sample())

    with pytest.raises(ForeignPayloadError) as caught:
        reader.decode(payload)

    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (frame(9, 0, 0, b""), "unknown serializer #9"),
        (frame(1, 7, 0, b""), r"pickle\+unknown compressor #7"),
        (frame(1, 0, 0x04, b""), "unknown flags 0x04"),
        (b"SG\x02\x01\x00\x00", "format version 2"),
    ],
)
def test_unknown_header_values_are_foreign(payload: bytes, fragment: str) -> None:
    """A header from a newer or unknown codec is a ForeignPayloadError saying what."""
    with pytest.raises(ForeignPayloadError, match=fragment):
        PickleCodec().decode(payload)


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"", "shorter than"),
        (b"SG\x01", "shorter than"),
        (b"\x80\x05\x95\x00\x00\x00", "does not start with sergeant's header"),
        ("SG\x01\x01\x00\x00", "must be bytes"),
    ],
)
def test_non_sergeant_payloads_are_decode_errors(payload: Any, fragment: str) -> None:
    """Short, headerless or non-bytes input is a plain DecodeError saying why."""
    with pytest.raises(DecodeError, match=fragment):
        PickleCodec().decode(payload)


@pytest.mark.parametrize(
    "fields",
    [
        (1, 2),
        ({}, "q", "id", "tr", 1.0, -1, 1, None, None),
        ({}, "q", "id", "tr", 1.0, 0, 7, None, None),
        ({}, "q", "id", "tr", float("nan"), 0, 1, None, None),
        # Times a float cannot hold, or past ten years for a timeout: they
        # decoded, then failed a broker's checks when the task was pushed again.
        ({}, "q", "id", "tr", float("inf"), 0, 1, None, None),
        ({}, "q", "id", "tr", 10**400, 0, 1, None, None),
        ({}, "q", "id", "tr", 1.0, 0, 1, float("inf"), None),
        ({}, "q", "id", "tr", 1.0, 0, 1, -(10**400), None),
        ({}, "q", "id", "tr", 1.0, 0, 1, None, float("inf")),
        ({}, "q", "id", "tr", 1.0, 0, 1, None, 10**400),
        ({}, "q", "id", "tr", 1.0, 0, 1, None, 1e300),
        ({}, "q", "id", "tr", 1.0, 0, 1, None, -5.0),
        ([], "q", "id", "tr", 1.0, 0, 1, None, None),
        ({}, b"q", "id", "tr", 1.0, 0, 1, None, None),
        ({}, "q", "id", "tr", 1.0, True, 1, None, None),
    ],
)
def test_malformed_task_records_are_decode_errors(fields: tuple[Any, ...]) -> None:
    """A well-framed body whose record has a wrong shape, type or range is refused."""
    payload = frame(1, 0, 0, pickle.dumps(fields, 5))

    with pytest.raises(DecodeError, match="task"):
        PickleCodec().decode(payload)


def test_unsigned_payload_given_to_a_signer_is_a_signature_error() -> None:
    """A signer refuses the unsigned payload of its own inner composition."""
    payload = ZlibCodec(PickleCodec()).encode(sample())

    with pytest.raises(SignatureError, match="payload is not signed"):
        HmacSigner(ZlibCodec(PickleCodec()), key=KEY).decode(payload)


def test_payload_signed_with_another_key_is_a_signature_error() -> None:
    """A payload signed with another key is refused."""
    payload = HmacSigner(PickleCodec(), key=OTHER_KEY).encode(sample())

    with pytest.raises(SignatureError, match="does not match"):
        HmacSigner(PickleCodec(), key=KEY).decode(payload)


def test_signers_sharing_a_key_read_each_other() -> None:
    """Two signers built separately with the same key decode each other's payloads."""
    payload = HmacSigner(ZlibCodec(PickleCodec()), key=bytearray(KEY)).encode(sample())

    decoded = HmacSigner(ZlibCodec(PickleCodec()), key=KEY).decode(payload)

    assert decoded == sample()


def test_unsigned_pickle_runs_a_planted_payload(tmp_path: pathlib.Path) -> None:
    """Control: a bare pickle codec does execute the planted payload (hence signing)."""
    path = tmp_path / "pwned"
    payload = frame(1, 0, 0, pickle.dumps(_Plant(path), 5))

    with pytest.raises(DecodeError):
        PickleCodec().decode(payload)

    assert path.exists()


@pytest.mark.parametrize("mac", [b"", b"\x00" * 32], ids=["missing-mac", "wrong-mac"])
def test_signer_never_unpickles_an_unverified_payload(
    tmp_path: pathlib.Path, mac: bytes
) -> None:
    """A planted pickle without a valid MAC is refused and never unpickled."""
    path = tmp_path / "pwned"
    body = pickle.dumps(_Plant(path), 5)
    payload = frame(1, 0, 1 if mac else 0, mac + body)

    with pytest.raises(SignatureError):
        HmacSigner(PickleCodec(), key=KEY).decode(payload)

    assert not path.exists()


def test_signer_verifies_before_the_inner_codec_sees_the_body() -> None:
    """A tampered payload never reaches the inner codec; a genuine one does, once."""
    spy = _SpyPickle()
    signer = HmacSigner(ZlibCodec(spy), key=KEY)
    payload = signer.encode(sample())
    tampered = payload[:-1] + bytes([payload[-1] ^ 1])

    with pytest.raises(SignatureError):
        signer.decode(tampered)
    calls_after_tampered = len(spy.bodies)
    signer.decode(payload)

    assert calls_after_tampered == 0
    assert len(spy.bodies) == 1


@pytest.mark.parametrize("key", [b"", b"x" * 15, "a-str-key-of-32-characters-long!"])
def test_signer_refuses_short_or_non_bytes_keys(key: Any) -> None:
    """Keys must be bytes of at least 16; anything else is a ConfigError."""
    with pytest.raises(ConfigError, match="key"):
        HmacSigner(PickleCodec(), key=key)


def test_signer_accepts_a_16_byte_key() -> None:
    """16 bytes is the minimum key size, and it signs."""
    signer = HmacSigner(PickleCodec(), key=b"k" * 16)

    decoded = signer.decode(signer.encode(sample()))

    assert decoded == sample()


def test_signer_repr_hides_the_key() -> None:
    """A signer's repr shows its layers but not its key."""
    text = repr(HmacSigner(ZlibCodec(PickleCodec(), level=1), key=KEY))

    assert KEY.decode() not in text
    assert text == "HmacSigner(ZlibCodec(PickleCodec(), level=1), key=<hidden>)"


@pytest.mark.parametrize(
    "build",
    [
        lambda: ZlibCodec(HmacSigner(PickleCodec(), key=KEY)),  # type: ignore[arg-type]
        lambda: ZlibCodec(LzmaCodec(PickleCodec())),
        lambda: HmacSigner(HmacSigner(PickleCodec(), key=KEY), key=KEY),  # type: ignore[arg-type]
        lambda: ZlibCodec(object()),  # type: ignore[arg-type]
        lambda: ZlibCodec(PickleCodec(), level=10),
        lambda: Bz2Codec(PickleCodec(), level=0),
        lambda: LzmaCodec(PickleCodec(), level=6.0),  # type: ignore[arg-type]
    ],
    ids=[
        "compress-signed",
        "compress-twice",
        "sign-twice",
        "wrap-non-codec",
        "zlib-level",
        "bz2-level",
        "float-level",
    ],
)
def test_invalid_compositions_are_config_errors(build: Any) -> None:
    """Compressing a signed or compressed codec, signing twice, wrapping a
    non-codec and out-of-range levels are refused when the codec is built."""
    with pytest.raises(ConfigError):
        build()


def test_compressing_a_signed_codec_says_to_sign_last() -> None:
    """The refusal to compress a signed codec tells how to compose instead."""
    with pytest.raises(ConfigError, match=r"sign last.*HmacSigner\(ZlibCodec"):
        ZlibCodec(HmacSigner(PickleCodec(), key=KEY))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("codec", "value", "type_name"),
    [
        pytest.param(JsonCodec(), b"raw", "bytes", id="json-bytes"),
        pytest.param(JsonCodec(), {1, 2}, "set", id="json-set"),
        pytest.param(JsonCodec(), "a\udcffb", "str", id="json-lone-surrogate"),
        pytest.param(
            ZlibCodec(JsonCodec()), "\ud800", "str", id="zlib-json-lone-surrogate"
        ),
        pytest.param(MsgpackCodec(), "a\udcffb", "str", id="msgpack-lone-surrogate"),
        pytest.param(MsgpackCodec(), {1, 2}, "set", id="msgpack-set"),
        pytest.param(MsgpackCodec(), 2**64, "int", id="msgpack-bigint"),
        pytest.param(PickleCodec(), lambda: None, "function", id="pickle-lambda"),
        pytest.param(
            ZlibCodec(JsonCodec()), Priority, "enum.EnumType", id="zlib-json-class"
        ),
    ],
)
def test_encode_error_names_the_kwarg_and_its_type(
    codec: Any, value: Any, type_name: str
) -> None:
    """EncodeError names the kwarg the serializer cannot hold and that value's type."""
    task = Task(kwargs={"fine": 1, "culprit": value})

    with pytest.raises(EncodeError) as caught:
        codec.encode(task)

    assert f"kwarg 'culprit' of type {type_name}" in str(caught.value)
    assert str(caught.value).startswith(codec.name.split("+")[0])


@pytest.mark.parametrize("codec", [PickleCodec(), MsgpackCodec(), JsonCodec()])
def test_kwargs_that_are_not_a_mapping_are_refused(codec: Any) -> None:
    """kwargs that are not a mapping raise EncodeError naming their type."""
    task = Task(kwargs=[("a", 1)])  # type: ignore[arg-type]

    with pytest.raises(EncodeError, match="kwargs must be a dict, got list"):
        codec.encode(task)


def test_msgpack_keeps_bytes_and_turns_tuples_into_lists() -> None:
    """msgpack returns bytes as bytes and a tuple as a list (documented)."""
    codec = MsgpackCodec()

    decoded = codec.decode(codec.encode(Task(kwargs={"b": b"\x00\xff", "t": (1, 2)})))

    assert decoded.kwargs == {"b": b"\x00\xff", "t": [1, 2]}
    assert type(decoded.kwargs["b"]) is bytes


def test_json_turns_tuples_into_lists_and_int_keys_into_strs() -> None:
    """JSON returns a tuple as a list and int dict keys as strs (documented)."""
    codec = JsonCodec()

    decoded = codec.decode(codec.encode(Task(kwargs={"t": (1, 2), "d": {1: "a"}})))

    assert decoded.kwargs == {"t": [1, 2], "d": {"1": "a"}}


def test_gzip_payloads_are_deterministic() -> None:
    """Equal tasks encode to equal gzip payloads (no timestamp in the gzip header)."""
    codec = GzipCodec(PickleCodec())

    first, second = codec.encode(sample()), codec.encode(sample())

    assert first == second


def test_msgpack_is_imported_only_when_asked_for() -> None:
    """Importing the codecs package leaves msgpack out until MsgpackCodec is named."""
    script = (
        "import sys, sergeant.adapters.codecs as c\n"
        "before = 'msgpack' in sys.modules\n"
        "c.MsgpackCodec\n"
        "print(before, 'msgpack' in sys.modules)\n"
    )

    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )

    assert result.stdout.split() == ["False", "True"]


@pytest.mark.parametrize("compressor", [ZlibCodec, GzipCodec, Bz2Codec, LzmaCodec])
def test_a_payload_inflating_past_max_inflated_is_refused(compressor: Any) -> None:
    """A small payload that inflates past the bound (a decompression bomb) is a
    DecodeError, in one call and in a batch, and costs no other payload; a task
    that encodes past the bound is refused at push time."""
    big = Task(kwargs={"blob": "a" * 200_000}, queue="q")
    small = Task(kwargs={"n": 1}, queue="q")
    lenient = compressor(PickleCodec())
    strict = compressor(PickleCodec(), max_inflated=100_000)
    bomb, fine = lenient.encode(big), lenient.encode(small)

    with pytest.raises(DecodeError, match=r"max_inflated \(100000 bytes\)"):
        strict.decode(bomb)
    decoded = strict.decode_many([bomb, fine])
    with pytest.raises(EncodeError, match="max_inflated"):
        strict.encode(big)

    assert len(bomb) < 2_000
    assert isinstance(decoded[0], DecodeError)
    assert decoded[1] == small


@pytest.mark.parametrize("compressor", [ZlibCodec, GzipCodec, Bz2Codec, LzmaCodec])
def test_max_inflated_must_be_a_positive_int(compressor: Any) -> None:
    """A bad bound fails at construction, naming it."""
    for bad in (0, -1, 1.5, "64MiB"):
        with pytest.raises(ConfigError, match="max_inflated"):
            compressor(PickleCodec(), max_inflated=bad)


def test_msgpack_brings_a_tuple_dict_key_back_as_a_tuple() -> None:
    """msgpack packs a tuple key as an array, which cannot be a dict key once read
    as a list: it comes back as the tuple, alone and in a batch."""
    codec = MsgpackCodec()
    task = Task(kwargs={"m": {(1, (2, 3)): "a", "x": [1, (2, 3)]}}, queue="q")
    payload = codec.encode(task)

    single = codec.decode(payload)
    batch = codec.decode_many([payload, b"junk"])

    assert single.kwargs == {"m": {(1, (2, 3)): "a", "x": [1, [2, 3]]}}
    assert batch[0] == single
    assert isinstance(batch[1], DecodeError)
