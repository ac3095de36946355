"""The demo's figures, computed from what flowed through the topics (pure).

Inputs are decoded records read back from the topics after the run, plus what the
replay sent; nothing here is a constant or an estimate. A classifier is reported by its
accuracy (and macro F1), a regressor by its MAE and RMSE: the served predictions, the static
first trained model and bare River (the same spec, prequential, the same label delay, in one
process), each on every labelled event and on the events after the static model's training
window.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from driftloop.services.monitoring.core import class_key, macro_f1
from driftloop.shared.modelspec import REGRESSION, infer_task, is_number, label_fits, predict, same_class
from driftloop.streams import index_of, numeric


def percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def first_by_event(records: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for r in records:
        out.setdefault(r["event_id"], r)
    return out


def static_predictions(
    vectors: Sequence[Mapping[str, Any]],
    labels: Mapping[str, Any],
    load_model: Callable[[], Any] | None,
    start: int = 0,
) -> list[tuple[int, Any, Any]]:
    """(event index, prediction, label) of one frozen model on every labelled feature vector
    from event index ``start`` on, in event order."""
    if load_model is None:
        return []
    model = load_model()
    out = []
    for v in vectors:
        if v["event_id"] in labels and index_of(v["event_id"]) >= start:
            predicted, _ = predict(model, v["features"])
            out.append((index_of(v["event_id"]), predicted, labels[v["event_id"]]))
    return sorted(out, key=lambda t: t[0])


def bare_prequential(
    rows: Sequence[tuple[dict[str, Any], Any]], label_delay: int, model: Any, task: str | None = None
) -> list[Any]:
    """Bare River: ``model`` predicts each row, then learns the row ``label_delay`` rows
    back (the label delay the loop had); the prediction of each row. Unlabelled rows, and
    with a ``task`` rows whose label it cannot learn (the loop dead-letters them), are
    predicted and never learned."""
    out: list[Any] = []
    pending: deque[tuple[dict[str, float], Any]] = deque()
    for fields, label in rows:
        x = numeric(fields)
        out.append(predict(model, x)[0])
        pending.append((x, label))
        if len(pending) > label_delay:
            xj, yj = pending.popleft()
            if yj is not None and (task is None or label_fits(task, yj)):
                model.learn_one(xj, yj)
    return out


def errors_of(triples: Iterable[tuple[int, Any, Any]]) -> list[tuple[int, float]]:
    """(event index, absolute error) of the predictions that are numbers, against numeric labels."""
    out = []
    for i, predicted, label in triples:
        if is_number(predicted) and is_number(label) and math.isfinite(predicted - label):
            out.append((i, abs(float(predicted) - float(label))))
    return out


def mae(errors: Sequence[tuple[int, float]], start: int = 0) -> float | None:
    es = [e for i, e in errors if i >= start]
    return sum(es) / len(es) if es else None


def rmse(errors: Sequence[tuple[int, float]], start: int = 0) -> float | None:
    es = [e for i, e in errors if i >= start]
    return math.sqrt(sum(e * e for e in es) / len(es)) if es else None


def accuracy(hits: Sequence[tuple[int, bool]], start: int = 0) -> float | None:
    hs = [h for i, h in hits if i >= start]
    return sum(hs) / len(hs) if hs else None


def f1_of(triples: Iterable[tuple[int, Any, Any]], start: int = 0) -> float | None:
    return macro_f1([(class_key(y), None if p is None else class_key(p)) for i, p, y in triples if i >= start])


def task_of(registry: Sequence[Mapping[str, Any]], labels: Iterable[Any]) -> str | None:
    """The task retraining recorded on its trained versions, else what the labels call for."""
    recorded = [r.get("task") for r in registry if r["params"].get("trained") == "true" and r.get("task")]
    if recorded:
        return str(recorded[-1])
    return infer_task(labels, final=True)


def failure(summary: Mapping[str, Any]) -> str | None:
    """Why a run is no demonstration of the loop (one line), or None: nothing trained, or
    every event or example dead-lettered."""
    codes = ", ".join(f"{c} {n}" for c, n in sorted(summary["dead_letter_codes"].items()))
    if summary["events_sent"] and summary["dead_lettered_events"] >= summary["events_sent"]:
        return f"every one of the {summary['events_sent']} events was dead-lettered ({codes})"
    if summary["trained_versions"] == 0:
        dead = summary["examples_dead_lettered"]
        if dead:
            return (
                f"retraining trained nothing: it dead-lettered {dead} of the {summary['labels_sent']} "
                f"labelled examples ({codes}); see the deadletter topic for why"
            )
        return f"retraining trained nothing from the {summary['labels_sent']} labels sent"
    return None


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
    bare_predictions: Callable[[str | None], tuple[str, list[Any]] | None] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(summary.json, series for the plots). ``bare_predictions(task)``: bare River's
    (spec, prediction per sent event in order) for that task, or None."""
    sent = set(sent_event_ids)
    champion_preds = [p for p in predictions if p["role"] == "champion"]
    served = first_by_event(champion_preds)
    labels = {lab["event_id"]: lab["label"] for lab in clean_labels}
    dead_events = {d["event_id"] for d in dead_letters if d["event_id"] and d["source_topic"].endswith("events.raw")}
    without = sent - set(served) - dead_events
    task = task_of(registry, labels.values())
    regression = task == REGRESSION

    served_triples = sorted(
        ((index_of(eid), p["predicted"], labels[eid]) for eid, p in served.items() if eid in labels),
        key=lambda t: t[0],
    )
    served_hits = [(i, same_class(p, y)) for i, p, y in served_triples]
    static_triples = static_predictions(vectors, labels, load_baseline, baseline_from)
    static_hits = [(i, same_class(p, y)) for i, p, y in static_triples]
    bare = bare_predictions(task) if bare_predictions is not None else None
    bare_triples: list[tuple[int, Any, Any]] = []
    if bare is not None:
        by_index = {index_of(eid): eid for eid in sent_event_ids}
        bare_triples = [(i, p, labels[by_index[i]]) for i, p in enumerate(bare[1]) if by_index.get(i) in labels]

    swap_pause, max_gap = prediction_gaps_ms(champion_preds)
    latencies = [p["predicted_at"] - p["ingest_time"] for p in served.values() if p["ingest_time"] is not None]
    first_in = min((p["ingest_time"] for p in served.values() if p["ingest_time"] is not None), default=None)
    last_out = max((p["predicted_at"] for p in served.values()), default=None)
    span_s = (last_out - first_in) / 1000 if first_in is not None and last_out is not None else None

    versions = sorted({(r["name"], r["version"]) for r in registry})
    promotions = [r for r in registry if r["status"] == "champion" and r["trigger"] != "bootstrap"]
    # Known drift points are concept changes: their detection is a concept alert.
    alert_idx = sorted(index_of(a["event_id"]) for a in alerts if a["event_id"] and a["kind"] == "concept")
    trained = {r["version"] for r in registry if r["params"].get("trained") == "true"}
    # From the first event a trained version served: what the loop costs against bare River
    # once it has a model (the cadence, the evaluation, the swap), without the cold start
    # that the untrained bootstrap serves until the first version is cut.
    trained_from = min((index_of(e) for e, p in served.items() if p["model_version"] in trained), default=None)
    summary: dict[str, Any] = {
        "task": task,
        "events_sent": len(sent),
        "labels_sent": labels_sent,
        "events_clean": len({e["event_id"] for e in clean_events}),
        "dead_lettered": len(dead_letters),
        "dead_lettered_events": len(dead_events),
        "dead_letter_codes": _count(d["error_code"] for d in dead_letters),
        "examples_dead_lettered": len({d["event_id"] for d in dead_letters if d["source_topic"].endswith("examples")}),
        "trained_versions": len(trained),
        "predictions": len(champion_preds),
        "events_predicted": len(served),
        "events_without_prediction": len(without),
        "duplicate_predictions": len(champion_preds) - len(served),
        "labels_joined": len({o["event_id"] for o in outcomes if o["role"] == "champion"}),
    }
    if bare is not None:
        summary["bare_river_spec"] = bare[0]
    if regression:
        served_errors, static_errors, bare_errors = (
            errors_of(served_triples),
            errors_of(static_triples),
            errors_of(bare_triples),
        )
        summary |= {
            "served_mae": mae(served_errors),
            "served_rmse": rmse(served_errors),
            # Labelled events served no number (the untrained bootstrap of a classifier spec).
            "served_without_value": len(served_triples) - len(served_errors),
            "baseline_static_mae": mae(static_errors),
            "baseline_static_rmse": rmse(static_errors),
            "baseline_model_version": baseline_version,
            # On the events after the baseline's training window, so that neither is scored
            # on data it learned from.
            "baseline_window_start": baseline_from,
            "served_mae_same_window": mae(served_errors, baseline_from),
            "served_rmse_same_window": rmse(served_errors, baseline_from),
            "bare_river_mae": mae(bare_errors) if bare else None,
            "bare_river_rmse": rmse(bare_errors) if bare else None,
            "bare_river_mae_same_window": mae(bare_errors, baseline_from) if bare else None,
            "bare_river_rmse_same_window": rmse(bare_errors, baseline_from) if bare else None,
            "trained_window_start": trained_from,
            "served_mae_trained_window": mae(served_errors, trained_from) if trained_from is not None else None,
            "bare_river_mae_trained_window": mae(bare_errors, trained_from)
            if bare and trained_from is not None
            else None,
        }
    else:
        bare_hits = [(i, same_class(p, y)) for i, p, y in bare_triples]
        summary |= {
            "served_accuracy": accuracy(served_hits),
            "baseline_static_accuracy": accuracy(static_hits),
            "baseline_model_version": baseline_version,
            # Both on the events after the baseline's training window, so neither is scored
            # on data it learned from.
            "baseline_window_start": baseline_from,
            "served_accuracy_same_window": accuracy(served_hits, baseline_from),
            "served_macro_f1": f1_of(served_triples),
            "baseline_static_macro_f1": f1_of(static_triples),
            "bare_river_accuracy": accuracy(bare_hits) if bare else None,
            "bare_river_accuracy_same_window": accuracy(bare_hits, baseline_from) if bare else None,
            "trained_window_start": trained_from,
            "served_accuracy_trained_window": accuracy(served_hits, trained_from) if trained_from is not None else None,
            "bare_river_accuracy_trained_window": (
                accuracy(bare_hits, trained_from) if bare and trained_from is not None else None
            ),
            "bare_river_macro_f1": f1_of(bare_triples) if bare else None,
        }
    summary |= {
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
        "task": task,
        "served_hits": served_hits,
        "static_hits": static_hits,
        "bare_hits": [(i, same_class(p, y)) for i, p, y in bare_triples],
        "served_errors": errors_of(served_triples),
        "static_errors": errors_of(static_triples),
        "bare_errors": errors_of(bare_triples),
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
