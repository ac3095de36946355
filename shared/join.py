"""A two-sided stream join that emits each key once, with a time-to-live (pure).

Either side may arrive first and waits in its mapping until the other comes. Joined keys
are remembered, so an at-least-once redelivery of either side after the join neither
emits a second result nor leaves an orphan waiting forever. The mappings are provided by
the caller: dicts in tests, changelog-backed state stores (shared/state.py) in a service.

Time is the caller's watermark (the newest record time it has seen), passed in: entries
older than ``ttl_ms`` behind it expire. A waiting entry that expires is returned to the
caller, which counts it (an unmatched label, a prediction that never got its label).
The expiry index lives in memory; ``reindex`` rebuilds it from the mappings after a
restart, so entries recovered from a changelog still expire.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, Generic, TypeVar

Record = Mapping[str, Any]
LEFT, RIGHT = "left", "right"
J = TypeVar("J")  # what a join makes of a pair


class OnceJoin(Generic[J]):
    def __init__(
        self,
        left: MutableMapping[str, Any],
        right: MutableMapping[str, Any],
        joined: MutableMapping[str, Any],
        combine: Callable[[Record, Record], J],
        ttl_ms: int | None = None,
    ) -> None:
        self.left = left
        self.right = right
        self.joined = joined
        self.combine = combine
        self.ttl_ms = ttl_ms
        # Per shard (the caller's partition), (arrival time, side, key), oldest first. Expiry
        # runs per shard because a store records a deletion in the changelog partition
        # of the record being processed: an entry may only be dropped from its own partition.
        self._index: dict[int, deque[tuple[int, str, str]]] = {}

    def _arrive(self, key: str, value: Record, side: str, now_ms: int, shard: int) -> tuple[Record, Record] | None:
        mine, other = (self.left, self.right) if side == LEFT else (self.right, self.left)
        if key in self.joined:
            return None
        waiting = other.get(key)
        if waiting is None:
            if key not in mine:
                self._index.setdefault(shard, deque()).append((now_ms, side, key))
            mine[key] = {**value, "_arrived_ms": now_ms, "_shard": shard}
            return None
        del other[key]
        self.joined[key] = [now_ms, shard]
        self._index.setdefault(shard, deque()).append((now_ms, "joined", key))
        return value, _strip(waiting)

    def on_left(self, key: str, value: Record, now_ms: int = 0, shard: int = 0) -> J | None:
        pair = self._arrive(key, value, LEFT, now_ms, shard)
        return None if pair is None else self.combine(pair[0], pair[1])

    def on_right(self, key: str, value: Record, now_ms: int = 0, shard: int = 0) -> J | None:
        pair = self._arrive(key, value, RIGHT, now_ms, shard)
        return None if pair is None else self.combine(pair[1], pair[0])

    def expire(self, watermark_ms: int, shard: int = 0) -> list[tuple[str, Record]]:
        """Drop the shard's entries that arrived more than ``ttl_ms`` before the watermark;
        return the waiting (never joined) ones as (side, record)."""
        index = self._index.get(shard)
        if self.ttl_ms is None or not index:
            return []
        expired: list[tuple[str, Record]] = []
        cutoff = watermark_ms - self.ttl_ms
        while index and index[0][0] < cutoff:
            t, side, key = index.popleft()
            store = self.joined if side == "joined" else (self.left if side == LEFT else self.right)
            value = store.get(key)
            if value is None:
                continue  # joined meanwhile
            arrived = value[0] if side == "joined" else value.get("_arrived_ms", t)
            if arrived != t:
                continue  # re-arrived later; a newer index entry covers it
            del store[key]
            if side != "joined":
                expired.append((side, _strip(value)))
        return expired

    def reindex(self) -> None:
        """Rebuild the expiry index from the mappings (after recovery from changelogs)."""
        entries = [(v.get("_arrived_ms", 0), v.get("_shard", 0), LEFT, k) for k, v in self.left.items()]
        entries += [(v.get("_arrived_ms", 0), v.get("_shard", 0), RIGHT, k) for k, v in self.right.items()]
        entries += [(int(v[0]), int(v[1]), "joined", k) for k, v in self.joined.items()]
        self._index = {}
        for t, shard, side, key in sorted(entries):
            self._index.setdefault(shard, deque()).append((t, side, key))

    def __len__(self) -> int:
        return len(self.left) + len(self.right)


def _strip(value: Record) -> dict[str, Any]:
    return {k: v for k, v in value.items() if k not in ("_arrived_ms", "_shard")}
