"""The runtime's partitioner must put a key where any Kafka producer would: the joins rely on
records keyed by entity landing in the same partition whoever produced them."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from shared.kafka import Partitioner


@given(st.binary(min_size=0, max_size=64), st.integers(min_value=1, max_value=64))
def test_keyed_records_go_where_the_java_default_partitioner_puts_them(key: bytes, partitions: int) -> None:
    expected = DefaultPartitioner()(key, list(range(partitions)), list(range(partitions)))
    assert Partitioner().partition(key, partitions) == expected


def test_the_cache_is_bounded_and_answers_stay_the_same_after_it_is_cleared() -> None:
    p = Partitioner(cache_size=8)
    keys = [f"entity-{i}".encode() for i in range(50)]
    first = [p.partition(k, 4) for k in keys]
    assert len(p._hashes) <= 8  # noqa: SLF001 - the bound is the point of the test
    assert [p.partition(k, 4) for k in keys] == first


def test_records_without_a_key_spread_over_every_partition() -> None:
    p = Partitioner()
    assert sorted({p.partition(None, 4) for _ in range(8)}) == [0, 1, 2, 3]
