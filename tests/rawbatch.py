"""Hand-made record batches for the poison-batch tests, and a raw Produce that writes one as is.

The corruptions both brokers accept: a gzip or lz4 batch whose compressed payload is a valid
stream followed by garbage, with a valid CRC. Apache Kafka decompresses such a batch on
produce to check its records, but its decompressors stop at the end of the stream; Python's
gzip module (BadGzipFile) and cramjam's lz4 refuse what follows, so aiokafka cannot decode
the batch. Apache Kafka 4.4 refuses a bad CRC (CORRUPT_MESSAGE), an unknown codec id
(UNKNOWN_SERVER_ERROR), and truncated or garbage gzip, snappy, lz4 and zstd payloads, and
snappy or zstd with trailing garbage. Tansu takes all of those but the unknown codec id.
"""

from __future__ import annotations

import asyncio
import struct
import time

from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.record._crc32c import crc as crc32c
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.structs import TopicPartition

CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
HEADER_BYTES = 61  # a v2 batch header: offsets, length, epoch, magic, CRC, attributes, ... record count
_CRC_AT, _ATTRIBUTES_AT = 17, 21  # the CRC covers everything from the attributes on
# NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE
_NO_LEADER_YET = (6, 3, 5)


def record_batch(values: list[bytes], codec: str = "none", key: bytes | None = None) -> bytes:
    builder = DefaultRecordBatchBuilder(2, CODEC_IDS[codec], 0, -1, -1, -1, 1 << 20)
    for i, value in enumerate(values):
        builder.append(i, timestamp=None, key=key, value=value, headers=[])
    return bytes(builder.build())


def with_payload(batch: bytes, payload: bytes) -> bytes:
    """``batch`` with its records section replaced by ``payload``: length and CRC made right."""
    out = bytearray(batch[:HEADER_BYTES]) + payload
    struct.pack_into(">i", out, 8, len(out) - 12)
    struct.pack_into(">I", out, _CRC_AT, crc32c(bytes(out[_ATTRIBUTES_AT:])))
    return bytes(out)


def with_trailing_garbage(values: list[bytes], codec: str = "gzip", key: bytes | None = None) -> bytes:
    """A ``codec`` batch whose payload is a valid compressed stream followed by garbage."""
    batch = record_batch(values, codec, key)
    return with_payload(batch, batch[HEADER_BYTES:] + b"garbage!")


def gzip_with_trailing_garbage(values: list[bytes], key: bytes | None = None) -> bytes:
    return with_trailing_garbage(values, "gzip", key)


def with_codec_id(batch: bytes, codec_id: int) -> bytes:
    """``batch`` with its attributes naming codec ``codec_id`` (5..7 name none), CRC made right."""
    out = bytearray(batch)
    attributes = struct.unpack_from(">h", out, _ATTRIBUTES_AT)[0]
    struct.pack_into(">h", out, _ATTRIBUTES_AT, (attributes & ~0x07) | codec_id)
    struct.pack_into(">I", out, _CRC_AT, crc32c(bytes(out[_ATTRIBUTES_AT:])))
    return bytes(out)


def with_bad_crc(batch: bytes) -> bytes:
    return batch[:-1] + bytes([batch[-1] ^ 0xFF])


async def produce_raw(bootstrap: str, tp: TopicPartition, batch: bytes, timeout_s: float = 15.0) -> int:
    """Write ``batch`` as it is to ``tp``'s leader; the partition's error code (0: taken).
    A topic created a moment ago may not have its leader yet: that is waited for."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            leader = (await client.fetch_all_metadata()).leader_for_partition(tp)
            if leader is not None and leader >= 0:
                request = ProduceRequest(None, -1, 10_000, [(tp.topic, [(tp.partition, batch)])])
                code = int((await client.send(leader, request)).topics[0][1][0][1])
                if code not in _NO_LEADER_YET or time.monotonic() > deadline:
                    return code
            elif time.monotonic() > deadline:
                return _NO_LEADER_YET[0]
            await asyncio.sleep(0.2)
    finally:
        await client.close()
