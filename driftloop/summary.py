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
from typing import Any, NamedTuple

import numpy as np

from driftloop.services.monitoring.core import RollingAccuracy, class_key, macro_f1
from driftloop.services.monitoring.estimate import AccuracyEstimate
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


#: Consecutive labelled events a label-free estimate is judged over, windows starting every
#: ESTIMATE_STEP of them; a window that reaches into the DRIFT_SPAN events after a known
#: drift point is judged "under drift".
ESTIMATE_WINDOW = 500
ESTIMATE_STEP = 100
DRIFT_SPAN = 1000


class Estimated(NamedTuple):
    """One labelled champion prediction, as monitoring's estimate saw it."""

    event: int  # its event index
    estimate: float  # the estimated probability that it is correct, made as it arrived
    lagged: float | None  # the realized accuracy of the outcomes known then (None before any)
    correct: bool


def estimates(
    champion: Mapping[str, Mapping[str, Any]], labels: Mapping[str, Mapping[str, Any]], window: int = ESTIMATE_WINDOW
) -> list[Estimated]:
    """Each labelled champion prediction with class scores, in event order: monitoring's
    :class:`AccuracyEstimate` replayed over the predictions (by the time they were made) and
    their outcomes (by the time both prediction and label were there, as monitoring's join
    gives them), each prediction estimated from the outcomes before it. Beside it, the
    baseline that needs no estimate: the accuracy of the last ``window`` outcomes known when
    it was made."""
    timeline = [(p["predicted_at"], 0, eid) for eid, p in champion.items()]
    timeline += [
        (max(champion[eid]["predicted_at"], lab["label_time"]), 1, eid)
        for eid, lab in labels.items()
        if eid in champion
    ]
    estimate = AccuracyEstimate(window=window, calibration_window=window)
    realized = RollingAccuracy(window)
    at_prediction: dict[str, tuple[float, float | None]] = {}
    for _, kind, eid in sorted(timeline):
        p = champion[eid]
        if kind == 0:
            q = estimate.on_prediction(p)
            if q is not None:
                at_prediction[eid] = (q, realized.value)
        else:
            correct = same_class(p["predicted"], labels[eid]["label"])
            estimate.on_outcome({**p, "correct": correct})
            realized.update(correct)
    return sorted(
        Estimated(index_of(eid), q, lagged, same_class(champion[eid]["predicted"], labels[eid]["label"]))
        for eid, (q, lagged) in at_prediction.items()
        if eid in labels
    )


def estimate_figures(
    series: Sequence[Estimated],
    drift_points: Sequence[int],
    window: int = ESTIMATE_WINDOW,
    step: int = ESTIMATE_STEP,
) -> dict[str, Any]:
    """The label-free estimate against the realized accuracy: the mean absolute difference
    between the two over windows of ``window`` consecutive labelled events, over every
    window, the stationary ones and those under drift (None where there is none); and the
    same for the lagged realized accuracy, the figure one has without an estimate. Windows
    start from the first prediction made once some outcome was known, so that both are
    judged on the same ones."""
    known = next((k for k, e in enumerate(series) if e.lagged is not None), len(series))
    errors: list[tuple[float, float, bool]] = []
    for start in range(known, len(series) - window + 1, step):
        chunk = series[start : start + window]
        first, last = chunk[0].event, chunk[-1].event
        drifting = any(first < d + DRIFT_SPAN and last >= d for d in drift_points)
        accuracy = sum(e.correct for e in chunk) / window
        estimated = sum(e.estimate for e in chunk) / window
        lagged = sum(e.lagged or 0.0 for e in chunk) / window
        errors.append((abs(estimated - accuracy), abs(lagged - accuracy), drifting))

    def mean(values: list[float]) -> float | None:
        return sum(values) / len(values) if values else None

    out: dict[str, Any] = {"estimated_accuracy": mean([e.estimate for e in series])}
    for k, name in ((0, "estimated_accuracy_error"), (1, "lagged_accuracy_error")):
        out[name] = mean([e[k] for e in errors])
        out[f"{name}_stationary"] = mean([e[k] for e in errors if not e[2]])
        out[f"{name}_drift"] = mean([e[k] for e in errors if e[2]])
    out["estimated_accuracy_windows"] = len(errors)
    return out


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
    estimated: list[Estimated] = []
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
        estimated = estimates(served, {lab["event_id"]: lab for lab in clean_labels})
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
            **estimate_figures(estimated, drift_points),
        }
    summary |= {
        "drift_alerts": len(alerts),
        # An escalated alert repeats its incident's id (DriftAlert v3; before it, each alert
        # was an incident of its own).
        "drift_incidents": len({a.get("incident_id") or a["alert_id"] for a in alerts}),
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
        "estimated_hits": [(e.event, e.estimate) for e in estimated],
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
