"""The point-in-time label join (pure): a label meets exactly the features the model saw.

State lives in two mappings the caller provides (dicts in tests, changelog-backed Faust
tables in the service), both keyed by event_id. Whichever side arrives first waits for
the other; the pair is emitted once and both entries are removed, so a replayed label
or vector after the join cannot emit a second example.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any


def labeled_example(vector: Mapping[str, Any], label: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "event_id": vector["event_id"],
        "entity_id": vector["entity_id"],
        "event_time": vector["event_time"],
        "features": dict(vector["features"]),
        "feature_set_version": vector["feature_set_version"],
        "label": label["label"],
        "label_time": label["label_time"],
    }


class LabelJoin:
    def __init__(self, vectors: MutableMapping[str, Any], labels: MutableMapping[str, Any]) -> None:
        self.vectors = vectors
        self.labels = labels

    def on_vector(self, vector: Mapping[str, Any]) -> dict[str, Any] | None:
        event_id = vector["event_id"]
        label = self.labels.get(event_id)
        if label is None:
            self.vectors[event_id] = dict(vector)
            return None
        del self.labels[event_id]
        return labeled_example(vector, label)

    def on_label(self, label: Mapping[str, Any]) -> dict[str, Any] | None:
        event_id = label["event_id"]
        vector = self.vectors.get(event_id)
        if vector is None:
            self.labels[event_id] = dict(label)
            return None
        del self.vectors[event_id]
        return labeled_example(vector, label)
