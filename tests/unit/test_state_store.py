"""The changelog-backed StateStore (pure): writes carry their shard, ``drain`` owes the last
write per key, ``load`` replays a changelog, ``drop_partitions`` forgets partitions; and the
changelog is a faithful replay of the store, also under the once-only join."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftloop.shared.join import OnceJoin
from driftloop.shared.state import StateStore, Write


def snapshot(store: StateStore) -> tuple[dict[str, Any], dict[str, int]]:
    """(contents, partition of each key)."""
    return dict(store.items()), dict(store._partition)  # the partitions are the point


def replay(records: list[Write]) -> StateStore:
    fresh = StateStore("replayed")
    fresh.load(records)
    return fresh


def json_roundtrip(records: list[Write]) -> list[Write]:
    """What the service shell does to a record between ``drain`` and ``load``."""
    return [(p, k, None if v is None else json.loads(json.dumps(v, separators=(",", ":")))) for p, k, v in records]


# --- writes, drain, load, drop_partitions --------------------------------------------------------


def test_writes_carry_the_shard_at_write_time() -> None:
    s = StateStore("s")
    s.shard = 2
    s["a"] = 1
    s.shard = 3
    s["b"] = 2
    assert s["a"] == 1 and s.get("b") == 2 and s.get("zz") is None and "a" in s and len(s) == 2
    assert s.partitions() == {2, 3}
    assert sorted(s.drain()) == [(2, "a", 1), (3, "b", 2)]
    s["a"] = 10  # rewritten while processing partition 3: the key now lives in 3, and 2 forgets it
    assert sorted(s.drain(), key=str) == [(2, "a", None), (3, "a", 10)]
    assert s.partitions() == {3}


def test_drain_returns_only_the_last_write_per_key_and_empties() -> None:
    s = StateStore("s")
    s.shard = 1
    for v in range(5):
        s["a"] = v
    s["b"] = "x"
    s["b"] = "y"
    assert sorted(s.drain()) == [(1, "a", 4), (1, "b", "y")]
    assert s.drain() == []  # nothing owed twice
    assert dict(s) == {"a": 4, "b": "y"}  # draining does not touch the contents
    s["c"] = 1
    assert s.drain() == [(1, "c", 1)]


def test_a_delete_drains_as_a_tombstone_in_the_keys_own_partition() -> None:
    s = StateStore("s")
    s.shard = 1
    s["a"] = 1
    s.drain()
    s.shard = 3  # deleted while processing another partition (e.g. by a join expiry)
    del s["a"]
    assert s.drain() == [(1, "a", None)]
    assert "a" not in s and s.partitions() == set()
    # set and delete within one batch: the tombstone (last write) is what is owed
    s["b"] = 2
    del s["b"]
    assert s.drain() == [(3, "b", None)]
    with pytest.raises(KeyError):
        del s["missing"]
    assert s.drain() == []  # a failed delete owes nothing


def test_mutable_mapping_helpers_go_through_the_changelog() -> None:
    s = StateStore("s")
    s.shard = 2
    s.update({"a": 1, "b": 2})
    assert s.setdefault("c", 3) == 3
    assert s.pop("a") == 1
    assert sorted(s.drain()) == [(2, "a", None), (2, "b", 2), (2, "c", 3)]
    s.clear()
    assert sorted(s.drain()) == [(2, "b", None), (2, "c", None)]
    assert len(s) == 0


def test_load_applies_writes_and_tombstones_in_order() -> None:
    s = StateStore("s")
    records: list[Write] = [
        (0, "a", 1),
        (1, "b", {"x": [1, 2]}),
        (0, "a", 2),
        (1, "b", None),
        (2, "c", 3),
        (2, "gone", None),  # a tombstone for a key never seen is harmless
        (2, "c", None),
        (2, "c", 4),
    ]
    assert s.load(records) == len(records)
    assert snapshot(s) == ({"a": 2, "c": 4}, {"a": 0, "c": 2})
    assert s.drain() == []  # recovered state is not owed to the changelog again


def test_drop_partitions_forgets_exactly_those_partitions_keys_and_pending_writes() -> None:
    s = StateStore("s")
    s.load([(0, "a0", 1), (1, "b1", 1), (2, "c2", 1)])
    s.shard = 1
    s["d1"] = 2  # pending in partition 1
    s.shard = 3
    s["e3"] = 3  # pending in partition 3
    assert s.drop_partitions([1, 2, 7]) == 3  # b1, d1, c2
    assert snapshot(s) == ({"a0": 1, "e3": 3}, {"a0": 0, "e3": 3})
    assert s.drain() == [(3, "e3", 3)]  # the pending write of dropped partition 1 is gone
    assert s.partitions() == {0, 3}
    assert s.drop_partitions([]) == 0


def test_drop_partitions_also_forgets_pending_tombstones() -> None:
    s = StateStore("s")
    s.shard = 2
    s["a"] = 1
    s.drain()
    del s["a"]  # tombstone owed to partition 2
    s.drop_partitions([2])  # partition 2 was revoked before the flush
    assert s.drain() == []


def test_a_key_that_moves_partition_is_not_resurrected_by_recovery() -> None:
    s = StateStore("s")
    changelog: dict[int, dict[str, Any]] = defaultdict(dict)  # compacted: last record per key per partition

    def flush() -> None:
        for p, k, v in s.drain():
            changelog[p][k] = v

    s.shard = 0
    s["k"] = "old"
    flush()
    s.shard = 1
    s["k"] = "new"  # e.g. a duplicate event_id keyed to another partition after the dedup TTL
    del s["k"]
    flush()
    for order in ([0, 1], [1, 0]):
        recovered = StateStore("r")
        for p in order:
            recovered.load((p, k, v) for k, v in changelog[p].items())
        assert dict(recovered) == dict(s), f"partition order {order}"


def test_a_none_value_is_refused_and_leaves_the_store_alone() -> None:
    # None is the changelog's tombstone: stored, it would read back as a deletion after a
    # restart, so the store refuses it rather than lose the key silently on recovery.
    s = StateStore("s")
    s["a"] = 1
    s.drain()
    with pytest.raises(ValueError, match="deletion marker"):
        s["a"] = None
    with pytest.raises(ValueError, match="deletion marker"):
        s["b"] = None
    assert dict(s) == {"a": 1} and s.drain() == []


# --- property: the changelog is a faithful replay -------------------------------------------------

values = st.one_of(
    st.integers(min_value=-(2**40), max_value=2**40),
    st.text(max_size=4),
    st.lists(st.integers(min_value=0, max_value=9), max_size=3),
    st.dictionaries(st.sampled_from(["x", "y", "_shard"]), st.integers(min_value=0, max_value=9), max_size=3),
)
# (op, key, shard, value): op "set" | "del" | "drain"
operations = st.lists(
    st.tuples(
        st.sampled_from(["set", "set", "del", "drain"]),
        st.sampled_from([f"k{i}" for i in range(6)]),
        st.integers(min_value=0, max_value=3),
        values,
    ),
    max_size=60,
)


def run_ops(ops: list[tuple[str, str, int, Any]]) -> tuple[StateStore, list[Write]]:
    s = StateStore("s")
    drained: list[Write] = []
    for op, key, shard, value in ops:
        s.shard = shard
        if op == "set":
            s[key] = value
        elif op == "del":
            if key in s:
                del s[key]
        else:
            drained += s.drain()
    drained += s.drain()
    return s, drained


@settings(max_examples=300, deadline=None)
@given(ops=operations)
def test_property_loading_all_drained_records_in_order_reproduces_the_store(ops: list) -> None:
    s, drained = run_ops(ops)
    assert snapshot(replay(drained)) == snapshot(s)
    assert snapshot(replay(json_roundtrip(drained))) == snapshot(s)  # as the shell sends and reads them


@settings(max_examples=200, deadline=None)
@given(ops=operations, data=st.data())
def test_property_co_partitioned_keys_recover_from_a_compacted_changelog_in_any_partition_order(
    ops: list, data: st.DataObject
) -> None:
    """As recovery reads it: each partition compacted and in order, partitions in any
    interleaving, some partitions dropped; keys written always from their own partition."""
    ops = [(op, key, int(key[1:]) % 4, value) for op, key, _, value in ops]  # co-partitioned
    s, drained = run_ops(ops)
    log: dict[int, dict[str, Any]] = defaultdict(dict)
    for p, k, v in drained:
        log[p].pop(k, None)  # compaction keeps the last record of a key, at its offset
        log[p][k] = v
    order = data.draw(st.permutations(sorted(log)))
    owned = data.draw(st.sets(st.integers(min_value=0, max_value=3)))
    recovered = StateStore("r")
    for p in order:
        if p in owned:
            recovered.load((p, k, v) for k, v in log[p].items())
    s.drop_partitions(set(range(4)) - owned)
    assert snapshot(recovered) == snapshot(s)


# --- the once-only join over stores ----------------------------------------------------------------


def combine(left: dict, right: dict) -> dict:
    return {"left": left["v"], "right": right["v"]}


def store_join(ttl_ms: int | None = None) -> tuple[OnceJoin, list[StateStore]]:
    stores = [StateStore(n) for n in ("left", "right", "joined")]
    return OnceJoin(stores[0], stores[1], stores[2], combine, ttl_ms), stores


def dict_join(ttl_ms: int | None = None) -> OnceJoin:
    return OnceJoin({}, {}, {}, combine, ttl_ms)


def step(join: OnceJoin, stores: list[StateStore], op: tuple[str, int, int, int]) -> Any:
    kind, i, shard, now = op
    for store in stores:
        store.shard = shard  # what the runtime's cursor tells a store per record
    if kind == "left":
        return join.on_left(f"k{i}", {"v": i}, now, shard)
    if kind == "right":
        return join.on_right(f"k{i}", {"v": -i}, now, shard)
    return join.expire(now, shard)


def test_join_over_stores_emits_once_and_its_changelog_replays() -> None:
    join, stores = store_join()
    assert step(join, stores, ("left", 1, 2, 10)) is None
    assert step(join, stores, ("right", 1, 2, 20)) == {"left": 1, "right": -1}
    assert step(join, stores, ("right", 1, 2, 30)) is None  # redelivery after the join
    assert step(join, stores, ("left", 1, 2, 40)) is None
    left, right, joined = (s.drain() for s in stores)
    assert left == [(2, "k1", None)]  # waited, then removed by the join
    assert right == []
    assert joined == [(2, "k1", [20, 2])]


# (kind, key index, shard, time): kind "left" | "right" | "expire"
join_ops = st.lists(
    st.tuples(
        st.sampled_from(["left", "right", "left", "right", "expire"]),
        st.integers(min_value=0, max_value=7),
        st.integers(min_value=0, max_value=2),
        st.integers(min_value=0, max_value=1_000),
    ),
    max_size=50,
).map(lambda ops: [(k, i, i % 3, t) for k, i, _, t in ops])  # co-partitioned by key, as in the services


@settings(max_examples=300, deadline=None)
@given(ops=join_ops, ttl=st.sampled_from([None, 100, 400]), drain_every=st.integers(min_value=1, max_value=7))
def test_property_join_over_stores_behaves_like_over_dicts_and_replays(
    ops: list, ttl: int | None, drain_every: int
) -> None:
    reference = dict_join(ttl)
    join, stores = store_join(ttl)
    changelogs: list[list[Write]] = [[], [], []]
    emitted: list[dict] = []
    for n, op in enumerate(ops):
        out = step(join, stores, op)
        assert out == step(reference, [], op)
        if op[0] != "expire" and out is not None:
            emitted.append(out)
        if n % drain_every == 0:  # a batch boundary
            for log, store in zip(changelogs, stores, strict=True):
                log += json_roundtrip(store.drain())
    for log, store in zip(changelogs, stores, strict=True):
        log += json_roundtrip(store.drain())

    keys = [e["left"] for e in emitted]
    if ttl is None:  # with a TTL a joined key is forgotten, and a redelivery after that joins again
        assert len(keys) == len(set(keys)), f"more than one result for a key: {emitted}"
    assert [dict(s) for s in stores] == [dict(reference.left), dict(reference.right), dict(reference.joined)]

    # Recovery: fresh stores loaded from the changelogs, the expiry index rebuilt.
    recovered_stores = [replay(log) for log in changelogs]
    assert [snapshot(r) for r in recovered_stores] == [snapshot(s) for s in stores]
    recovered = OnceJoin(*recovered_stores, combine, ttl)
    recovered.reindex()
    join.reindex()
    # From here on the recovered join answers exactly as the one that never stopped.
    for kind in ("left", "right"):
        for i in range(8):
            op = (kind, i, i % 3, 2_000)
            assert step(recovered, recovered_stores, op) == step(join, stores, op)
    for shard in range(3):
        assert sorted(map(repr, recovered.expire(5_000, shard))) == sorted(map(repr, join.expire(5_000, shard)))
    assert [dict(s) for s in recovered_stores] == [dict(s) for s in stores]
