"""The pure part of the poison-batch handling: which errors may come from a batch, and
finding the undecodable batch and its offset range in raw Fetch data."""

from __future__ import annotations

import struct
import zlib

import pytest
from aiokafka.errors import CorruptRecordException, KafkaConnectionError, UnsupportedCodecError
from rawbatch import gzip_with_trailing_garbage, record_batch, with_bad_crc, with_codec_id, with_payload

from driftloop.shared.poison import first_undecodable, may_be_poison


def at(batch: bytes, base_offset: int) -> bytes:
    """``batch`` as a broker serves it: with its base offset assigned (outside the CRC)."""
    return struct.pack(">q", base_offset) + batch[8:]


def log(*batches: tuple[int, bytes]) -> bytes:
    return b"".join(at(b, base) for base, b in batches)


CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
GOOD3 = record_batch([b"a", b"b", b"c"])
POISONS = {
    "gzip_trailing_garbage": gzip_with_trailing_garbage([b"x", b"y", b"z", b"w"]),
    "bad_crc": with_bad_crc(record_batch([b"x", b"y", b"z", b"w"])),
    "unknown_codec": with_codec_id(record_batch([b"x", b"y", b"z", b"w"]), 5),
    "lz4_garbage": with_payload(record_batch([b"x", b"y", b"z", b"w"], "lz4"), b"\x04\x22\x4d\x18" + b"\x00" * 9),
}


def test_every_codec_decodes() -> None:
    data = log(*((i * 3, record_batch([b"a", b"b", b"c"], codec)) for i, codec in enumerate(CODECS)))
    assert first_undecodable(data, 0) is None


@pytest.mark.parametrize("kind", sorted(POISONS))
def test_the_poison_batch_and_its_range_are_found_between_good_ones(kind: str) -> None:
    poison = POISONS[kind]
    data = log((0, GOOD3), (3, poison), (7, GOOD3))
    bad = first_undecodable(data, 0)
    assert bad is not None and (bad.first, bad.last) == (3, 6)
    assert bad.raw == at(poison, 3)
    # Asked from inside the batch: the range starts there.
    bad = first_undecodable(data, 5)
    assert bad is not None and (bad.first, bad.last) == (5, 6)
    # Asked from past it: the rest decodes.
    assert first_undecodable(data, 7) is None


def test_an_unreadable_header_or_a_cut_batch_gives_no_range() -> None:
    data = log((0, GOOD3), (3, POISONS["bad_crc"]))
    assert first_undecodable(data[: len(data) - 5], 3) is None  # the window ends inside the batch
    mangled = bytearray(data)
    struct.pack_into(">i", mangled, len(GOOD3) + 8, -7)  # its length field
    assert first_undecodable(bytes(mangled), 3) is None
    assert first_undecodable(b"", 0) is None


def test_errors_that_may_come_from_a_batch() -> None:
    assert may_be_poison(UnsupportedCodecError("Libraries for lz4 compression codec not found"))
    assert may_be_poison(CorruptRecordException("Invalid CRC"))
    assert may_be_poison(EOFError("Compressed file ended"))
    assert may_be_poison(zlib.error("bad"))
    assert not may_be_poison(KafkaConnectionError("broker gone"))
    assert not may_be_poison(KeyboardInterrupt())
