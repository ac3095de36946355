"""Graceful shutdown and backpressure, with the five services as processes on the real broker.

SIGTERM: each service, stopped mid-stream, drains the batch in hand, delivers its output,
commits (on Apache Kafka, ends its transactions in flight) and exits 0 within 10 s;
restarted, it re-emits nothing (no duplicate anywhere, no redelivered record dead-lettered
as a duplicate) and loses nothing.

Backpressure: with inference stopped (SIGSTOP), ingestion and features keep going through a
fast replay without their memory growing with the backlog and with a bounded number of
records in flight; inference, resumed, consumes the whole backlog from Kafka holding at
most a few batches of it at any time (driftloop_inflight_records).
"""

from __future__ import annotations

import asyncio
import signal
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from waiting import metric_value, scrape_metrics, wait_drained, wait_until

from driftloop.replay import replay
from driftloop.runner import Stack
from driftloop.shared.kafka import read_topic
from driftloop.shared.runtime.checkpoint import MAX_UNSETTLED, MAX_UNSETTLED_BATCHES
from driftloop.shared.serde import Serde
from driftloop.shared.settings import ServiceSettings
from driftloop.shared.topics import (
    DEADLETTER,
    EVENTS_CLEAN,
    EVENTS_RAW,
    EXAMPLES,
    FEATURES,
    LABELS_RAW,
    OUTCOMES,
    PREDICTIONS,
    Topics,
)
from driftloop.streams import Dataset, sea_stream

pytestmark = pytest.mark.e2e
SERVICES = ("ingestion", "features", "inference", "monitoring", "retraining")


def _decoded(bootstrap: str, topic: str, record: str, serde: Serde) -> list[dict[str, Any]]:
    return [serde.decode(record, r.value) for r in asyncio.run(read_topic(bootstrap, topic))]


def _replay_in_background(bootstrap: str, topics: Topics, serde: Serde, dataset: Dataset, rate: float | None) -> Any:
    result: dict[str, Any] = {}

    def run() -> None:
        result["replay"] = asyncio.run(replay(bootstrap, topics, serde, dataset, run_id="g", label_delay=50, rate=rate))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def _complete(bootstrap: str, topics: Topics, serde: Serde, sent: set[str]) -> bool:
    """Whether every sent event has a champion prediction, an example and a champion outcome."""
    champion = {
        p["event_id"]
        for p in _decoded(bootstrap, topics.name(PREDICTIONS), "Prediction", serde)
        if p["role"] == "champion"
    }
    examples = {e["event_id"] for e in _decoded(bootstrap, topics.name(EXAMPLES), "LabeledExample", serde)}
    scored = {
        o["event_id"] for o in _decoded(bootstrap, topics.name(OUTCOMES), "Outcome", serde) if o["role"] == "champion"
    }
    return sent <= champion and sent <= examples and sent <= scored


def _once_each(records: list[dict[str, Any]], sent: set[str]) -> dict[str, int]:
    """The sent events a topic does not hold exactly once, with their counts (0: missing)."""
    counts = Counter(r["event_id"] for r in records)
    return {e: counts[e] for e in sorted(sent | set(counts)) if counts[e] != 1}


def _sampler(pids: dict[str, int], into: dict[str, list[float]], every_s: float = 0.05) -> threading.Event:
    """Samples each process's RSS into ``into[name]`` until the returned event is set."""
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            for name, pid in pids.items():
                into[name].append(_rss_mb(pid))
            time.sleep(every_s)

    threading.Thread(target=run, daemon=True).start()
    return stop


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def test_sigterm_drains_commits_and_exits_then_nothing_is_lost_or_re_emitted(
    service_env: dict[str, str], topics: Topics, serde: Serde, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    n, rate = 3000, 100.0
    bootstrap = service_env["KAFKA_BOOTSTRAP_SERVERS"]
    dataset = Dataset("sea", sea_stream(n).rows, [], [f"ent-{i % 11}" for i in range(n)])
    stop_times: dict[str, float] = {}
    codes: dict[str, int | None] = {}
    committed: dict[str, float | None] = {}
    stack = Stack(env=dict(service_env), log_dir=tmp_path / "logs")
    try:
        stack.start()
        stack.wait_ready()
        thread, result = _replay_in_background(bootstrap, topics, serde, dataset, rate)
        time.sleep(0.2 * n / rate)
        ports = {name: int(service_env[f"DRIFTLOOP_{name.upper()}_METRICS_PORT"]) for name in SERVICES}
        for name in SERVICES:
            proc = stack.procs[name]
            committed[name] = metric_value(
                scrape_metrics(ports[name]), "driftloop_transactions_total", service=name, outcome="committed"
            )
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            codes[name] = proc.wait(timeout=30)
            stop_times[name] = time.monotonic() - started
            stack.start_service(name)
            time.sleep(1.0)
        thread.join(timeout=n / rate + 60)
        assert not thread.is_alive()
        assert (result["replay"].events_sent, result["replay"].labels_sent) == (n, n)
        sent = {f"g-{i}" for i in range(n)}
        # Polled, not slept: every event through to its outcome, then every service on the
        # way drained (nothing left to handle, so no late duplicate can follow the reads).
        wait_until(
            "every event predicted, joined and scored",
            lambda: _complete(bootstrap, topics, serde, sent),
            120,
            stack.check,
            every_s=1,
        )
        wait_drained({name: ports[name] for name in SERVICES[:4]}, check=stack.check)
    finally:
        stack.stop_services()

    raw = _decoded(bootstrap, topics.name(EVENTS_RAW), "RawEvent", serde)
    raw_labels = _decoded(bootstrap, topics.name(LABELS_RAW), "Label", serde)
    clean = _decoded(bootstrap, topics.name(EVENTS_CLEAN), "RawEvent", serde)
    vectors = _decoded(bootstrap, topics.name(FEATURES), "FeatureVector", serde)
    champion = [
        p for p in _decoded(bootstrap, topics.name(PREDICTIONS), "Prediction", serde) if p["role"] == "champion"
    ]
    examples = _decoded(bootstrap, topics.name(EXAMPLES), "LabeledExample", serde)
    outcomes = [o for o in _decoded(bootstrap, topics.name(OUTCOMES), "Outcome", serde) if o["role"] == "champion"]
    dead = _decoded(bootstrap, topics.name(DEADLETTER), "DeadLetter", serde)
    with capsys.disabled():
        stops = ", ".join(f"{k} {v:.1f} s" for k, v in stop_times.items())
        print(f"\nSIGTERM: {n} events, dead letters {len(dead)}; stopped in {stops}", file=sys.stderr)

    if service_env["DRIFTLOOP_BROKER_ENGINE"] == "kafka":
        # Exactly-once, the default on Apache Kafka: each service was committing transactions
        # when it was stopped, and its stop ended the one in flight.
        assert all(c is not None and c > 0 for c in committed.values()), committed
    assert codes == dict.fromkeys(SERVICES, 0), codes
    assert all(t < 10.0 for t in stop_times.values()), stop_times
    # A clean stop commits what it has produced: nothing is consumed twice after the restart.
    assert not dead, Counter(d["error_code"] for d in dead)
    # Exactly the n events and labels sent, and each of them exactly once at every stage.
    stages = {
        "events.raw": raw,
        "labels.raw": raw_labels,
        "events.clean": clean,
        "features": vectors,
        "champion predictions": champion,
        "examples": examples,
        "champion outcomes": outcomes,
    }
    for stage, records in stages.items():
        wrong = _once_each(records, sent)
        assert not wrong, f"{stage}: {len(wrong)} events not there exactly once, e.g. {list(wrong.items())[:5]}"


def _gauge_sampler(ports: dict[str, int], into: dict[str, list[tuple[float, float, float]]]) -> threading.Event:
    """Samples each service's (in-flight records, in-flight batches, consumer lag) from its
    /metrics into ``into[name]`` until the returned event is set."""
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            for name, port in ports.items():
                text = scrape_metrics(port)
                records, batches, lag = (
                    metric_value(text, metric, service=name) or 0.0
                    for metric in (
                        "driftloop_inflight_records",
                        "driftloop_inflight_batches",
                        "driftloop_consumer_lag_records",
                    )
                )
                into[name].append((records, batches, lag))
            time.sleep(0.05)

    threading.Thread(target=run, daemon=True).start()
    return stop


def test_a_stopped_downstream_service_does_not_grow_the_upstream_ones(
    service_env: dict[str, str], topics: Topics, serde: Serde, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    n = 40_000
    # What the runtime may hold of its input beyond aiokafka's prefetch (which
    # max_partition_fetch_bytes bounds): the batch in hand and MAX_UNSETTLED undelivered ones.
    batch_size = ServiceSettings.model_fields["batch_size"].default
    bound = (MAX_UNSETTLED + 1) * batch_size  # 2,500 records: 1/16 of the backlog
    bootstrap = service_env["KAFKA_BOOTSTRAP_SERVERS"]
    dataset = Dataset("sea", sea_stream(n).rows, [], [f"ent-{i % 101}" for i in range(n)])
    env = {
        **service_env,
        # Per-event state bounded by short TTLs (0.2 s: a few thousand events at replay
        # speed, reached early in the first half), the offline store flushed often: what is
        # left to grow is whatever would buffer the backlog, and nothing may.
        "DRIFTLOOP_INGESTION_DEDUP_TTL_S": "0.2",
        "DRIFTLOOP_FEATURES_JOIN_TTL_S": "0.2",
        "DRIFTLOOP_FEATURES_OFFLINE_FLUSH_RECORDS": "1000",
    }
    ports = {
        name: int(env[f"DRIFTLOOP_{name.upper()}_METRICS_PORT"]) for name in ("ingestion", "features", "inference")
    }
    stack = Stack(env=env, log_dir=tmp_path / "logs", services=("ingestion", "features", "inference"))
    rss: dict[str, list[float]] = {"ingestion": [], "features": [], "inference": []}
    gauges: dict[str, list[tuple[float, float, float]]] = {"ingestion": [], "features": [], "inference": []}
    try:
        stack.start()
        stack.wait_ready()
        # One event through the loop first, so that inference is past its start-up (its
        # registry follower's topic lookup has a 10 s deadline a stopped process outlives).
        warm = Dataset("sea", dataset.rows[:1], [], ["ent-warm"])
        asyncio.run(replay(bootstrap, topics, serde, warm, run_id="warm", label_delay=0, rate=None))
        wait_until(
            "the warm-up prediction", lambda: _decoded(bootstrap, topics.name(PREDICTIONS), "Prediction", serde), 60
        )
        inference = stack.procs["inference"]
        consumed = {"service": "inference", "topic": topics.name(FEATURES)}
        consumed_before = metric_value(scrape_metrics(ports["inference"]), "driftloop_records_in_total", **consumed)
        inference.send_signal(signal.SIGSTOP)  # the throttled consumer: it takes nothing
        upstream = _sampler({name: stack.procs[name].pid for name in ("ingestion", "features")}, rss)
        upstream_gauges = _gauge_sampler({name: ports[name] for name in ("ingestion", "features")}, gauges)
        # Paced, not a burst: the TTLs above bound the state by event time, so 0.2 s must stay
        # a few thousand events. An unpaced replay now stamps 40k events within ~1 s, which made
        # 0.2 s ~8k events and put the state's ramp into the quarters compared below.
        thread, result = _replay_in_background(bootstrap, topics, serde, dataset, 10_000.0)
        wait_until(
            f"features to produce {n} vectors while inference is stopped",
            lambda: not thread.is_alive() and len(asyncio.run(read_topic(bootstrap, topics.name(FEATURES)))) >= n + 1,
            180,
            stack.check,
        )
        upstream.set()
        upstream_gauges.set()
        assert result["replay"].events_sent == n
        backlog_rss = _rss_mb(inference.pid)
        inference.send_signal(signal.SIGCONT)
        sampler_stop = _sampler({"inference": inference.pid}, rss)
        inference_gauges = _gauge_sampler({"inference": ports["inference"]}, gauges)
        sent = {f"g-{i}" for i in range(n)}

        def predicted() -> bool:
            preds = _decoded(bootstrap, topics.name(PREDICTIONS), "Prediction", serde)
            return sent <= {p["event_id"] for p in preds if p["role"] == "champion"}

        wait_until("every event predicted after the resume", predicted, 180, stack.check, every_s=1)
        sampler_stop.set()
        inference_gauges.set()
        consumed_after = metric_value(scrape_metrics(ports["inference"]), "driftloop_records_in_total", **consumed)
    finally:
        stack.stop_services()

    # Growth from the second quarter of the stream to the last (medians of the samples, so
    # that a passing spike, such as an offline-store flush, is not taken for growth): a
    # buffer that followed the backlog would grow with it, steadily.
    def quarter(v: list[float], q: int) -> float:
        return statistics.median(v[q * len(v) // 4 : max((q + 1) * len(v) // 4, q * len(v) // 4 + 1)])

    growth = {name: quarter(v, 3) - quarter(v, 1) for name, v in rss.items() if name != "inference"}
    inference_growth = max(rss["inference"]) - backlog_rss
    peak = {name: (max(s[0] for s in v), max(s[1] for s in v), max(s[2] for s in v)) for name, v in gauges.items()}
    with capsys.disabled():
        print(
            f"\nbackpressure: {n} events with inference stopped; RSS growth from the second quarter to the last: "
            + ", ".join(f"{k} {v:.1f} MB" for k, v in growth.items())
            + f"; inference working off the backlog: +{inference_growth:.1f} MB; peak in-flight records/batches, lag: "
            + ", ".join(f"{k} {r:.0f}/{b:.0f}, {lag:.0f}" for k, (r, b, lag) in peak.items())
            + f" ({sum(len(v) for v in gauges.values())} samples)",
            file=sys.stderr,
        )
    # The backlog waited in Kafka: inference consumed all of it after the resume, while it
    # held a bounded part of it at any time, as did the upstream services the whole time.
    assert consumed_before is not None and consumed_after is not None
    assert consumed_after - consumed_before >= n, (consumed_before, consumed_after)
    assert peak["inference"][0] > 0, "no batch of the backlog was ever seen in flight"
    for name, (records, batches, _) in peak.items():
        # Under exactly-once the records are the bound: small batches may be more (shared/runtime/checkpoint.py).
        most = MAX_UNSETTLED_BATCHES if service_env["DRIFTLOOP_BROKER_ENGINE"] == "kafka" else MAX_UNSETTLED
        assert records <= bound and batches <= most + 1, (name, peak[name])
    # Half the stream lies between those quarters, 20k events and their labels: held as
    # Python records (~1 kB each decoded) a buffer of the backlog would add ~20 MB.
    assert all(g < 10.0 for g in growth.values()), growth
