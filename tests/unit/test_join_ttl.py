"""Expiry of the once-only join: waiting entries and joined-id memory both age out."""

from __future__ import annotations

from driftloop.shared.join import OnceJoin


def combine(left: dict, right: dict) -> dict:
    return {"left": left["v"], "right": right["v"]}


def make(ttl_ms: int = 100) -> OnceJoin:
    return OnceJoin({}, {}, {}, combine, ttl_ms)


def test_waiting_entries_expire_after_the_ttl_and_are_returned() -> None:
    j = make()
    assert j.on_left("a", {"v": 1}, now_ms=0, shard=0) is None
    assert j.on_right("b", {"v": 2}, now_ms=50, shard=0) is None
    assert j.expire(100, shard=0) == []  # nothing older than 100 ms yet
    assert j.expire(101, shard=0) == [("left", {"v": 1})]
    assert j.expire(151, shard=0) == [("right", {"v": 2})]
    assert len(j) == 0


def test_expiry_only_touches_its_own_shard() -> None:
    j = make()
    j.on_left("a", {"v": 1}, now_ms=0, shard=0)
    j.on_left("b", {"v": 2}, now_ms=0, shard=1)
    assert j.expire(1000, shard=1) == [("left", {"v": 2})]
    assert "a" in j.left
    assert j.expire(1000, shard=0) == [("left", {"v": 1})]


def test_joined_ids_are_forgotten_after_the_ttl_and_joined_entries_do_not_expire_as_waiting() -> None:
    j = make()
    j.on_left("a", {"v": 1}, now_ms=0)
    assert j.on_right("a", {"v": 2}, now_ms=10) == {"left": 1, "right": 2}
    assert j.on_right("a", {"v": 2}, now_ms=20) is None  # redelivery within the TTL
    assert j.expire(500) == []  # the joined pair is not reported as unmatched
    assert "a" not in j.joined


def test_a_re_arrival_is_not_expired_by_its_older_index_entry() -> None:
    j = make()
    j.on_left("a", {"v": 1}, now_ms=0)
    j.left["a"] = {"v": 1, "_arrived_ms": 90, "_shard": 0}  # as if it re-arrived at 90
    assert j.expire(150) == []
    assert "a" in j.left


def test_reindex_rebuilds_expiry_after_recovery() -> None:
    recovered = OnceJoin(
        {"a": {"v": 1, "_arrived_ms": 0, "_shard": 2}},
        {"b": {"v": 2, "_arrived_ms": 500, "_shard": 2}},
        {"c": [10, 3]},
        combine,
        ttl_ms=100,
    )
    assert recovered.expire(10_000, shard=2) == []  # nothing indexed before reindex()
    recovered.reindex()
    assert recovered.expire(300, shard=2) == [("left", {"v": 1})]
    assert recovered.expire(10_000, shard=3) == []
    assert "c" not in recovered.joined
    assert recovered.expire(10_000, shard=2) == [("right", {"v": 2})]


def test_without_a_ttl_nothing_expires() -> None:
    j = OnceJoin({}, {}, {}, combine)
    j.on_left("a", {"v": 1}, now_ms=0)
    assert j.expire(10**12) == [] and "a" in j.left
