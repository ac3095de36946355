"""The runtime's partitioner must put a key where any Kafka producer would: the joins rely on
records keyed by entity landing in the same partition whoever produced them."""

from __future__ import annotations

import pytest

from driftloop.shared.kafka import Partitioner

# Key -> partition of 4, as Kafka 4.4.0's Java console producer (default partitioner) placed
# them; tests/integration/test_producers.py checks the same keys against the live producer.
# An oracle independent of aiokafka's murmur2, which the partitioner itself uses.
JAVA_PARTITION_OF_4 = {
    "": 1,
    "a": 0,
    "ab": 2,
    "abc": 3,
    "abcd": 0,
    "abcde": 1,
    "ent-0": 0,
    "ent-1": 3,
    "ent-2": 0,
    "ent-3": 0,
    "ent-4": 1,
    "ent-17": 3,
    "ent-101": 2,
    "customer-42": 1,
    "é": 3,
    "日本語": 2,
    "🙂": 3,
    "x" * 100: 0,
}


@pytest.mark.parametrize(("key", "partition"), JAVA_PARTITION_OF_4.items(), ids=repr)
def test_keyed_records_go_where_the_java_default_partitioner_puts_them(key: str, partition: int) -> None:
    assert Partitioner().partition(key.encode(), 4) == partition


def test_the_cache_is_bounded_and_answers_stay_the_same_after_it_is_cleared() -> None:
    p = Partitioner(cache_size=8)
    keys = [f"entity-{i}".encode() for i in range(50)]
    first = [p.partition(k, 4) for k in keys]
    assert len(p._hashes) <= 8  # the bound is the point of the test
    assert [p.partition(k, 4) for k in keys] == first


def test_records_without_a_key_spread_over_every_partition() -> None:
    p = Partitioner()
    assert sorted({p.partition(None, 4) for _ in range(8)}) == [0, 1, 2, 3]
