"""The demo's figures, computed from what flowed through the topics (pure).

Inputs are decoded records read back from the topics after the run, plus what the
replay sent; nothing here is a constant or an estimate.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from services.streams import index_of
from shared.modelspec import predict, same_class


def percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def first_by_event(records: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for r in records:
        out.setdefault(r["event_id"], r)
    return out


def static_baseline(
    vectors: Sequence[Mapping[str, Any]],
    labels: Mapping[str, Any],
    load_model: Callable[[], Any] | None,
    start: int = 0,
) -> tuple[float | None, list[tuple[int, bool]]]:
    """Accuracy of one frozen model on every labelled feature vector the stream carried
    from event index ``start`` on (the events after its training window: out of sample)."""
    if load_model is None:
        return None, []
    model = load_model()
    hits: list[tuple[int, bool]] = []
    for v in vectors:
        if v["event_id"] in labels and index_of(v["event_id"]) >= start:
            predicted, _ = predict(model, v["features"])
            hits.append((index_of(v["event_id"]), same_class(predicted, labels[v["event_id"]])))
    acc = sum(h for _, h in hits) / len(hits) if hits else None
    return acc, sorted(hits)


def prediction_gaps_ms(predictions: Sequence[Mapping[str, Any]]) -> tuple[float | None, float | None]:
    """(swap pause, longest gap): the longest gap between consecutive champion predictions
    (by the time they were made) that spans a change of served version, which is what a
    swap costs the stream, and the longest gap of all, to tell a swap from any stall."""
    preds = sorted((p["predicted_at"], p["model_version"]) for p in predictions if p["role"] == "champion")
    gaps = [(b[0] - a[0], a[1] != b[1]) for a, b in itertools.pairwise(preds)]
    at_swaps = [g for g, swap in gaps if swap]
    return (float(max(at_swaps)) if at_swaps else None, float(max(g for g, _ in gaps)) if gaps else None)


def detection_delays(drift_points: Sequence[int], alert_indices: Sequence[int], n: int) -> list[int | None]:
    """Events from each drift point to the first alert after it (and before the next one)."""
    delays: list[int | None] = []
    bounds = list(drift_points) + [n]
    for point, end in zip(drift_points, bounds[1:], strict=True):
        after = [i for i in alert_indices if point <= i < end]
        delays.append(min(after) - point if after else None)
    return delays


def summarize(
    *,
    sent_event_ids: Sequence[str],
    labels_sent: int,
    clean_events: Sequence[Mapping[str, Any]],
    dead_letters: Sequence[Mapping[str, Any]],
    vectors: Sequence[Mapping[str, Any]],
    predictions: Sequence[Mapping[str, Any]],
    clean_labels: Sequence[Mapping[str, Any]],
    outcomes: Sequence[Mapping[str, Any]],
    alerts: Sequence[Mapping[str, Any]],
    registry: Sequence[Mapping[str, Any]],
    drift_points: Sequence[int],
    load_baseline: Callable[[], Any] | None,
    baseline_version: int | None,
    baseline_from: int = 0,
    wall_seconds: float,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(summary.json, series for the plots)."""
    sent = set(sent_event_ids)
    champion_preds = [p for p in predictions if p["role"] == "champion"]
    served = first_by_event(champion_preds)
    labels = {lab["event_id"]: lab["label"] for lab in clean_labels}
    dead_events = {d["event_id"] for d in dead_letters if d["event_id"] and d["source_topic"].endswith("events.raw")}
    without = sent - set(served) - dead_events

    served_hits = sorted(
        (index_of(eid), same_class(p["predicted"], labels[eid])) for eid, p in served.items() if eid in labels
    )
    served_acc = sum(h for _, h in served_hits) / len(served_hits) if served_hits else None
    static_acc, static_hits = static_baseline(vectors, labels, load_baseline, baseline_from)
    same_window = [h for i, h in served_hits if i >= baseline_from]

    swap_pause, max_gap = prediction_gaps_ms(champion_preds)
    latencies = [p["predicted_at"] - p["ingest_time"] for p in served.values() if p["ingest_time"] is not None]
    first_in = min((p["ingest_time"] for p in served.values() if p["ingest_time"] is not None), default=None)
    last_out = max((p["predicted_at"] for p in served.values()), default=None)
    span_s = (last_out - first_in) / 1000 if first_in is not None and last_out is not None else None

    versions = sorted({(r["name"], r["version"]) for r in registry})
    promotions = [r for r in registry if r["status"] == "champion" and r["trigger"] != "bootstrap"]
    # Known drift points are concept changes: their detection is a concept alert.
    alert_idx = sorted(index_of(a["event_id"]) for a in alerts if a["event_id"] and a["kind"] == "concept")
    summary = {
        "events_sent": len(sent),
        "labels_sent": labels_sent,
        "events_clean": len({e["event_id"] for e in clean_events}),
        "dead_lettered": len(dead_letters),
        "dead_lettered_events": len(dead_events),
        "dead_letter_codes": _count(d["error_code"] for d in dead_letters),
        "predictions": len(champion_preds),
        "events_predicted": len(served),
        "events_without_prediction": len(without),
        "duplicate_predictions": len(champion_preds) - len(served),
        "labels_joined": len({o["event_id"] for o in outcomes if o["role"] == "champion"}),
        "served_accuracy": served_acc,
        "baseline_static_accuracy": static_acc,
        "baseline_model_version": baseline_version,
        # Both on the events after the baseline's training window, so neither is scored
        # on data it learned from.
        "baseline_window_start": baseline_from,
        "served_accuracy_same_window": sum(same_window) / len(same_window) if same_window else None,
        "drift_alerts": len(alerts),
        "drift_alerts_by_kind": _count(a["kind"] for a in alerts),
        "drift_points": list(drift_points),
        "detection_delays": detection_delays(drift_points, alert_idx, len(sent)),
        "model_versions": len(versions),
        "promotions": len(promotions),
        "versions_served": sorted({p["model_version"] for p in served.values()}),
        "p50_latency_ms": percentile(latencies, 50),
        "p95_latency_ms": percentile(latencies, 95),
        "p99_latency_ms": percentile(latencies, 99),
        "max_latency_ms": float(max(latencies)) if latencies else None,
        "swap_pause_ms": swap_pause,
        "max_prediction_gap_ms": max_gap,
        "events_per_second": len(served) / span_s if span_s else None,
        "wall_seconds": wall_seconds,
    }
    first_served: dict[int, int] = {}
    for eid, p in served.items():
        i = index_of(eid)
        v = p["model_version"]
        first_served[v] = min(first_served.get(v, i), i)
    series = {
        "served_hits": served_hits,
        "static_hits": static_hits,
        "latencies_ms": latencies,
        "alert_indices": alert_idx,
        "version_first_index": sorted((i, v) for v, i in first_served.items()),
    }
    return summary, series


def _count(codes: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in codes:
        out[c] = out.get(c, 0) + 1
    return out
