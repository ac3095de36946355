"""De-duplication by event_id over a store the caller provides (a dict in tests, a
changelog-backed state store in the service). Pure: the time is passed in."""

from __future__ import annotations

from collections.abc import MutableMapping


class Deduplicator:
    """Remembers when each event_id was first seen; an id seen again within ``ttl_ms`` is a duplicate."""

    def __init__(self, store: MutableMapping[str, int], ttl_ms: int) -> None:
        self.store = store
        self.ttl_ms = ttl_ms

    def seen(self, event_id: str, now_ms: int) -> bool:
        """True if ``event_id`` is a duplicate; otherwise records it and returns False."""
        first = self.store.get(event_id)
        if first is not None and now_ms - first <= self.ttl_ms:
            return True
        self.store[event_id] = now_ms
        return False
