"""Codec fixtures: the compositions the contract suite runs against.

Each fixture builds one composition; ``contract_tests/conftest.py`` lists them in
its ``CODECS`` table. Codecs are stateless, so each test gets a fresh one cheaply.
"""

from __future__ import annotations

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
from sergeant.adapters.codecs.msgpack import MsgpackCodec

# A fixed test secret: tests that need a second, different key make their own.
CODEC_KEY = b"sergeant-contract-test-key-32-by"


@pytest.fixture
def codec_key() -> bytes:
    """The shared secret of the signed compositions."""
    return CODEC_KEY


@pytest.fixture
def pickle_codec() -> Any:
    """The default codec: bare pickle."""
    return PickleCodec()


@pytest.fixture
def msgpack_codec() -> Any:
    """Bare msgpack."""
    return MsgpackCodec()


@pytest.fixture
def json_codec() -> Any:
    """Bare JSON."""
    return JsonCodec()


@pytest.fixture
def zlib_msgpack_codec() -> Any:
    """msgpack compressed with zlib."""
    return ZlibCodec(MsgpackCodec())


@pytest.fixture
def lzma_pickle_codec() -> Any:
    """pickle compressed with xz, at a non-default preset."""
    return LzmaCodec(PickleCodec(), level=1)


@pytest.fixture
def gzip_json_codec() -> Any:
    """JSON compressed with gzip."""
    return GzipCodec(JsonCodec())


@pytest.fixture
def bz2_pickle_codec() -> Any:
    """pickle compressed with bzip2."""
    return Bz2Codec(PickleCodec())


@pytest.fixture
def hmac_zlib_pickle_codec(codec_key: bytes) -> Any:
    """pickle, compressed with zlib, signed with HMAC-SHA256: the safe default."""
    return HmacSigner(ZlibCodec(PickleCodec()), key=codec_key)
