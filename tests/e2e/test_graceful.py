"""Graceful shutdown and backpressure, with the five services as processes on the real broker.

SIGTERM: each service, stopped mid-stream, drains the batch in hand, delivers its output,
commits and exits 0 within 10 s; restarted, it re-emits nothing (no duplicate anywhere, no
redelivered record dead-lettered as a duplicate) and loses nothing.

Backpressure: with inference stopped (SIGSTOP), ingestion and features keep going through a
fast replay without their memory growing with the backlog; inference, resumed, works the
backlog off in bounded batches.
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

from services.replay import replay
from services.runner import Stack
from services.streams import Dataset, sea_stream
from shared.kafka import read_topic
from shared.serde import Serde
from shared.topics import Topics

pytestmark = pytest.mark.e2e
SERVICES = ("ingestion", "features", "inference", "monitoring", "retraining")


def _decoded(bootstrap: str, topic: str, record: str, serde: Serde) -> list[dict[str, Any]]:
    return [serde.decode(record, r.value) for r in asyncio.run(read_topic(bootstrap, topic))]


def _duplicates(records: list[dict[str, Any]]) -> int:
    return sum(c - 1 for c in Counter(r["event_id"] for r in records).values())


def _replay_in_background(bootstrap: str, topics: Topics, serde: Serde, dataset: Dataset, rate: float | None) -> Any:
    result: dict[str, Any] = {}

    def run() -> None:
        result["replay"] = asyncio.run(replay(bootstrap, topics, serde, dataset, run_id="g", label_delay=50, rate=rate))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def _wait_all_predicted(bootstrap: str, topics: Topics, serde: Serde, n: int, stack: Stack, timeout_s: float) -> set:
    sent = {f"g-{i}" for i in range(n)}
    deadline = time.monotonic() + timeout_s
    predicted: set[str] = set()
    while time.monotonic() < deadline:
        stack.check()
        preds = _decoded(bootstrap, topics.predictions, "Prediction", serde)
        predicted = {p["event_id"] for p in preds if p["role"] == "champion"}
        if sent <= predicted:
            return sent - predicted
        time.sleep(1)
    return sent - predicted


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
    stack = Stack(env=dict(service_env), log_dir=tmp_path / "logs")
    try:
        stack.start()
        stack.wait_ready()
        thread, result = _replay_in_background(bootstrap, topics, serde, dataset, rate)
        time.sleep(0.2 * n / rate)
        for name in SERVICES:
            proc = stack.procs[name]
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            codes[name] = proc.wait(timeout=30)
            stop_times[name] = time.monotonic() - started
            stack.start_service(name)
            time.sleep(1.0)
        thread.join(timeout=n / rate + 60)
        assert not thread.is_alive()
        lost = _wait_all_predicted(bootstrap, topics, serde, result["replay"].events_sent, stack, 120)
        time.sleep(3)
    finally:
        stack.stop_services()

    clean = _decoded(bootstrap, topics.events_clean, "RawEvent", serde)
    vectors = _decoded(bootstrap, topics.features, "FeatureVector", serde)
    champion = [p for p in _decoded(bootstrap, topics.predictions, "Prediction", serde) if p["role"] == "champion"]
    examples = _decoded(bootstrap, topics.examples, "LabeledExample", serde)
    outcomes = _decoded(bootstrap, topics.outcomes, "Outcome", serde)
    dead = _decoded(bootstrap, topics.deadletter, "DeadLetter", serde)
    with capsys.disabled():
        stops = ", ".join(f"{k} {v:.1f} s" for k, v in stop_times.items())
        print(f"\nSIGTERM: {n} events, lost {len(lost)}, dead letters {len(dead)}; stopped in {stops}", file=sys.stderr)

    assert codes == dict.fromkeys(SERVICES, 0), codes
    assert all(t < 10.0 for t in stop_times.values()), stop_times
    assert not lost
    # A clean stop commits what it has produced: nothing is consumed twice after the restart.
    assert not dead, Counter(d["error_code"] for d in dead)
    for records in (clean, vectors, champion, examples, [o for o in outcomes if o["role"] == "champion"]):
        assert _duplicates(records) == 0


def test_a_stopped_downstream_service_does_not_grow_the_upstream_ones(
    service_env: dict[str, str], topics: Topics, serde: Serde, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    n = 40_000
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
    stack = Stack(env=env, log_dir=tmp_path / "logs", services=("ingestion", "features", "inference"))
    rss: dict[str, list[float]] = {"ingestion": [], "features": [], "inference": []}
    try:
        stack.start()
        stack.wait_ready()
        inference = stack.procs["inference"]
        inference.send_signal(signal.SIGSTOP)  # the throttled consumer: it takes nothing
        upstream = _sampler({name: stack.procs[name].pid for name in ("ingestion", "features")}, rss)
        # Paced, not a burst: the TTLs above bound the state by event time, so 0.2 s must stay
        # a few thousand events. An unpaced replay now stamps 40k events within ~1 s, which made
        # 0.2 s ~8k events and put the state's ramp into the quarters compared below.
        thread, result = _replay_in_background(bootstrap, topics, serde, dataset, 10_000.0)
        deadline = time.monotonic() + 180
        vectors = 0
        while time.monotonic() < deadline:
            vectors = len(asyncio.run(read_topic(bootstrap, topics.features)))
            if not thread.is_alive() and vectors >= n:
                break
            time.sleep(0.5)
        upstream.set()
        assert vectors >= n, f"features produced {vectors} of {n} vectors while inference was stopped"
        backlog_rss = _rss_mb(inference.pid)
        inference.send_signal(signal.SIGCONT)
        sampler_stop = _sampler({"inference": inference.pid}, rss)
        lost = _wait_all_predicted(bootstrap, topics, serde, result["replay"].events_sent, stack, 180)
        sampler_stop.set()
    finally:
        stack.stop_services()

    # Growth from the second quarter of the stream to the last (medians of the samples, so
    # that a passing spike, such as an offline-store flush, is not taken for growth): a
    # buffer that followed the backlog would grow with it, steadily.
    def quarter(v: list[float], q: int) -> float:
        return statistics.median(v[q * len(v) // 4 : max((q + 1) * len(v) // 4, q * len(v) // 4 + 1)])

    growth = {name: quarter(v, 3) - quarter(v, 1) for name, v in rss.items() if name != "inference"}
    inference_growth = max(rss["inference"]) - backlog_rss
    with capsys.disabled():
        print(
            f"\nbackpressure: {n} events with inference stopped; RSS growth from the second quarter to the last: "
            + ", ".join(f"{k} {v:.1f} MB" for k, v in growth.items())
            + f"; inference working off the backlog: +{inference_growth:.1f} MB",
            file=sys.stderr,
        )
    assert not lost
    # Half the stream lies between those quarters, 20k events and their labels: held as
    # Python records (~1 kB each decoded) a buffer of the backlog would add ~20 MB.
    assert all(g < 10.0 for g in growth.values()), growth
    assert inference_growth < 40.0, inference_growth
