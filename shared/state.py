"""Key-value state of a service, co-partitioned with its input and backed by a changelog
(pure: the service shell sends what ``drain`` returns and feeds ``load`` on recovery).

Why not Faust tables: see the README's "State" section. Here, writes are a dict update;
the changelog records of a batch are produced together before the batch's input offsets
can be committed, and recovery reads each changelog partition to the high watermark of its
fetch responses.

Each key lives in the partition of the input record that wrote it (``shard``, which the
runtime's cursor tells the store), which is the changelog partition its writes go to: a
worker that is assigned input partition p owns changelog partition p. A key rewritten
under another partition (one event_id sent under two entity keys) moves there and leaves a
tombstone in its old partition; tombstones are partition-scoped on recovery.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, MutableMapping
from typing import Any

Write = tuple[int, str, Any]  # (partition, key, value or None for a deletion)


class StateStore(MutableMapping[str, Any]):
    def __init__(self, name: str, where: Callable[[], int] | None = None) -> None:
        self.name = name
        #: The input partition being processed, which the store's writes go to.
        self._where = where or (lambda: 0)
        self._data: dict[str, Any] = {}
        self._partition: dict[str, int] = {}
        self._pending: dict[tuple[int, str], Any] = {}  # (partition, key) -> last value, None deletes

    @property
    def shard(self) -> int:
        return self._where()

    @shard.setter
    def shard(self, partition: int) -> None:
        # Outside a runtime (the pure tests): the partition writes go to until set again.
        self._where = lambda: partition

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if value is None:
            raise ValueError("None is the changelog's deletion marker; it cannot be stored")
        shard = self._where()
        old = self._partition.get(key)
        if old is not None and old != shard:
            self._pending[(old, key)] = None  # moved: its old partition must forget it too
        self._data[key] = value
        self._partition[key] = shard
        self._pending[(shard, key)] = value

    def __delitem__(self, key: str) -> None:
        del self._data[key]
        self._pending[(self._partition.pop(key), key)] = None

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def drain(self) -> list[Write]:
        """The changelog records owed since the last drain: the last write of each key."""
        out = [(partition, key, value) for (partition, key), value in self._pending.items()]
        self._pending.clear()
        return out

    def load(self, writes: Iterable[Write]) -> int:
        """Apply changelog records in order (recovery); returns how many were applied."""
        n = 0
        for partition, key, value in writes:
            if value is None:
                # A tombstone is partition-scoped: it removes the key only from its partition
                # (a key that moved partition leaves one behind in the old one).
                if self._partition.get(key) == partition:
                    del self._data[key]
                    del self._partition[key]
            else:
                self._data[key] = value
                self._partition[key] = partition
            n += 1
        return n

    def drop_partitions(self, partitions: Iterable[int]) -> int:
        """Forget the keys of partitions this worker no longer owns; returns how many."""
        gone = set(partitions)
        keys = [k for k, p in self._partition.items() if p in gone]
        for k in keys:
            del self._data[k]
            del self._partition[k]
        # Their unflushed writes (tombstones included) belong to partitions another worker owns now.
        for pk in [pk for pk in self._pending if pk[0] in gone]:
            del self._pending[pk]
        return len(keys)

    def partitions(self) -> set[int]:
        return set(self._partition.values())
