"""A two-sided stream join that emits each key once (pure).

Either side may arrive first and waits in its mapping until the other comes. Joined keys
are remembered, so an at-least-once redelivery of either side after the join neither
emits a second result nor leaves an orphan waiting forever. The mappings are provided by
the caller: dicts in tests, changelog-backed Faust tables in a service.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

Record = Mapping[str, Any]


class OnceJoin:
    def __init__(
        self,
        left: MutableMapping[str, Any],
        right: MutableMapping[str, Any],
        joined: MutableMapping[str, Any],
        combine: Callable[[Record, Record], dict[str, Any]],
    ) -> None:
        self.left = left
        self.right = right
        self.joined = joined
        self.combine = combine

    def _arrive(
        self, key: str, value: Record, mine: MutableMapping[str, Any], other: MutableMapping[str, Any]
    ) -> tuple[Record, Record] | None:
        if key in self.joined:
            return None
        waiting = other.get(key)
        if waiting is None:
            mine[key] = dict(value)
            return None
        del other[key]
        self.joined[key] = True
        return value, waiting

    def on_left(self, key: str, value: Record) -> dict[str, Any] | None:
        pair = self._arrive(key, value, self.left, self.right)
        return None if pair is None else self.combine(pair[0], pair[1])

    def on_right(self, key: str, value: Record) -> dict[str, Any] | None:
        pair = self._arrive(key, value, self.right, self.left)
        return None if pair is None else self.combine(pair[1], pair[0])
