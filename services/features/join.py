"""The point-in-time label join (pure): a label meets exactly the features the model saw.

The join mechanics are driftloop.shared.join.OnceJoin: each event_id yields one example, whichever
side comes first and however often either is redelivered.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from driftloop.shared.errors import LabelExpired
from driftloop.shared.join import OnceJoin
from driftloop.shared.records import DeadLetter, LabeledExample

#: Where a waiting label keeps its source offset, for its dead letter if it expires.
OFFSET = "_offset"


def labeled_example(vector: Mapping[str, Any], label: Mapping[str, Any]) -> LabeledExample:
    return {
        "event_id": vector["event_id"],
        "entity_id": vector["entity_id"],
        "event_time": vector["event_time"],
        "features": dict(vector["features"]),
        "feature_set_version": vector["feature_set_version"],
        "label": label["label"],
        "label_time": label["label_time"],
    }


class LabelJoin(OnceJoin[LabeledExample]):
    """FeatureVectors ⨝ Labels by event_id, once per event_id."""

    def __init__(
        self,
        vectors: MutableMapping[str, Any],
        labels: MutableMapping[str, Any],
        joined: MutableMapping[str, Any] | None = None,
        ttl_ms: int | None = None,
    ) -> None:
        super().__init__(vectors, labels, {} if joined is None else joined, labeled_example, ttl_ms)
        self.vectors, self.labels = vectors, labels

    def on_vector(self, vector: Mapping[str, Any], now_ms: int = 0, shard: int = 0) -> LabeledExample | None:
        return self.on_left(vector["event_id"], vector, now_ms, shard)

    def on_label(self, label: Mapping[str, Any], now_ms: int = 0, shard: int = 0) -> LabeledExample | None:
        return self.on_right(label["event_id"], label, now_ms, shard)


def expired_label_letter(
    label: Mapping[str, Any], original_value: bytes, topic: str, partition: int, ttl_ms: int, now_ms: int
) -> DeadLetter:
    """The DeadLetter record of a label that waited past the TTL for its FeatureVector (an
    unknown event_id, or one whose vector expired first). ``original_value`` is the label
    re-encoded, since the join keeps the decoded record, not the consumed bytes."""
    return {
        "original_key": str(label["entity_id"]).encode(),
        "original_value": original_value,
        "source_topic": topic,
        "source_partition": int(partition),
        "source_offset": int(label.get(OFFSET, -1)),
        "service": "features",
        "error_code": LabelExpired.code,
        "error_message": (
            f"label for event {label['event_id']} waited {ttl_ms / 1000:g} s without its FeatureVector "
            "(an unknown event, or one older than the join TTL)"
        ),
        "event_id": label["event_id"],
        "time": now_ms,
    }
