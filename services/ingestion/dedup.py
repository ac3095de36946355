"""De-duplication by event_id over a store the caller provides (a dict in tests, a
changelog-backed state store in the service). Pure: the time is passed in."""

from __future__ import annotations

from collections.abc import MutableMapping


class Deduplicator:
    """Remembers when each event_id was first seen; an id seen again within ``ttl_ms`` is a
    duplicate. Ids older than the TTL are forgotten (every ``sweep_every`` calls, oldest
    first), so the store holds about one TTL's worth of ids, not the whole stream's.

    The sweep relies on the store iterating in insertion order (a dict does, and so does a
    state store, which a recovery refills in changelog order): an id is re-inserted at the
    end when its time is renewed.
    """

    def __init__(self, store: MutableMapping[str, int], ttl_ms: int, sweep_every: int = 1000) -> None:
        self.store = store
        self.ttl_ms = ttl_ms
        self.sweep_every = sweep_every
        self._calls = 0
        self._forgotten = 0

    @property
    def forgotten(self) -> int:
        """Ids dropped by the sweeps so far."""
        return self._forgotten

    def seen(self, event_id: str, now_ms: int) -> bool:
        """True if ``event_id`` is a duplicate; otherwise records it and returns False."""
        self._calls += 1
        if self._calls % self.sweep_every == 0:
            self.expire(now_ms)
        first = self.store.get(event_id)
        if first is not None:
            if now_ms - first <= self.ttl_ms:
                return True
            del self.store[event_id]  # renewed: it moves to the end of the order
        self.store[event_id] = now_ms
        return False

    def expire(self, now_ms: int) -> int:
        """Forget the ids first seen more than the TTL before ``now_ms``; returns how many."""
        old = []
        for event_id in self.store:
            if now_ms - self.store[event_id] <= self.ttl_ms:
                break
            old.append(event_id)
        for event_id in old:
            del self.store[event_id]
        self._forgotten += len(old)
        return len(old)
