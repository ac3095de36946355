"""Crash test: under a steady replay, every service is killed with SIGKILL three times and
restarted. Every event sent must get a prediction, and exactly one example and one
champion outcome (whatever the kills re-emitted upstream), and the per-entity window state every
restarted features worker recovers from its changelog must give exactly the vectors a
recomputation over the clean events gives."""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from waiting import count_duplicates, read_decoded, wait_drained, wait_until

from driftloop.replay import replay
from driftloop.runner import Stack, _metric_is_one
from driftloop.services.features.spec import FeatureSpec
from driftloop.shared.serde import Serde
from driftloop.shared.settings import CommonSettings
from driftloop.shared.topics import (
    ALERTS,
    DEADLETTER,
    EVENTS_CLEAN,
    EVENTS_RAW,
    EXAMPLES,
    FEATURES,
    LABELS_CLEAN,
    LABELS_RAW,
    OUTCOMES,
    PREDICTIONS,
    Topics,
)
from driftloop.streams import Dataset, sea_stream

pytestmark = pytest.mark.e2e
SERVICES = ("ingestion", "features", "inference", "monitoring", "retraining")
# The replay keeps producing until the last restarted service is ready and TAIL_S more
# seconds have passed, so the kills are under load by construction; N only bounds it.
N = 20000
RATE = 100.0  # events/s
ENTITIES = 7
WINDOWS = "x0:count:sliding:10s,x0:mean:sliding:10s,x1:max:tumbling:5s,x2:ewma:sliding:10s"
FIRST_ROUND_AT_S = 14.0  # into the replay; the next round starts once the last one has resumed
TAIL_S = 5.0
STAGGER_S = 1.0
RESUME_LIMIT_S = 30.0
READY_TARGET_S = 5.0  # issue 15's target for a restart, printed against, not asserted (a timed test)


def _once_each(records: list[dict[str, Any]], sent: set[str]) -> dict[str, int]:
    """The sent events a topic does not hold exactly once, with their counts (0: missing)."""
    counts = Counter(r["event_id"] for r in records)
    return {e: counts[e] for e in sorted(sent | set(counts)) if counts[e] != 1}


def _complete(bootstrap: str, topics: Topics, serde: Serde, sent: set[str]) -> bool:
    """Whether every sent event has a champion prediction, an example and a champion outcome."""
    roles = {
        "Prediction": topics.name(PREDICTIONS),
        "LabeledExample": topics.name(EXAMPLES),
        "Outcome": topics.name(OUTCOMES),
    }
    for record, topic in roles.items():
        got = {
            v["event_id"]
            for _, v in read_decoded(bootstrap, topic, serde, record)
            if v.get("role", "champion") == "champion"
        }
        if not sent <= got:
            return False
    return True


class _ReadyWatch(threading.Thread):
    """Seconds from one restart to the restarted service's readiness (it owns partitions
    again and has recovered their state), polled from the restart on, in its own thread so
    that the restarts after it do not delay the reading."""

    def __init__(self, name: str, port: int) -> None:
        super().__init__(daemon=True)
        self.service, self.port = name, port
        self.started = time.monotonic()
        self.seconds: float | None = None

    def run(self) -> None:
        while time.monotonic() - self.started < RESUME_LIMIT_S:
            if _metric_is_one(self.port, "driftloop_service_ready"):
                self.seconds = time.monotonic() - self.started
                return
            time.sleep(0.05)


def _wait_ready(watches: list[_ReadyWatch], stack: Stack) -> dict[str, float]:
    ready: dict[str, float] = {}
    for watch in watches:
        while watch.is_alive():
            stack.check()
            watch.join(timeout=0.5)
        if watch.seconds is None:
            raise AssertionError(f"{watch.service} was not ready {RESUME_LIMIT_S} s after its restart")
        ready[watch.service] = watch.seconds
    return ready


def test_every_service_killed_three_times_loses_nothing(
    service_env: dict[str, str], topics: Topics, serde: Serde, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {
        **service_env,
        "DRIFTLOOP_FEATURES_WINDOWS": WINDOWS,
        "DRIFTLOOP_RETRAINING_VERSION_EVERY": "500",
    }
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    rows = sea_stream(N).rows
    dataset = Dataset("sea", rows, [], [f"ent-{i % ENTITIES}" for i in range(N)])
    stack = Stack(env=env, log_dir=tmp_path / "logs")
    result: dict[str, Any] = {}
    kills: list[tuple[str, float]] = []  # (service, seconds from restart to ready)
    try:
        stack.start()
        stack.wait_ready()

        kills_done = threading.Event()

        def run_replay() -> None:
            result["replay"] = asyncio.run(
                replay(
                    bootstrap,
                    topics,
                    serde,
                    dataset,
                    run_id="crash",
                    label_delay=50,
                    rate=RATE,
                    until=kills_done.is_set,
                )
            )

        thread = threading.Thread(target=run_replay, daemon=True)
        started = time.monotonic()
        thread.start()
        ports = {name: int(env[f"DRIFTLOOP_{name.upper()}_METRICS_PORT"]) for name in SERVICES}
        time.sleep(max(0.0, started + FIRST_ROUND_AT_S - time.monotonic()))
        for _ in range(3):
            watches: list[_ReadyWatch] = []
            for name in SERVICES:
                stack.procs[name].send_signal(signal.SIGKILL)
                stack.procs[name].wait()
                stack.start_service(name)
                watches.append(_ReadyWatch(name, ports[name]))
                watches[-1].start()
                time.sleep(STAGGER_S)
            kills.extend(_wait_ready(watches, stack).items())
        assert thread.is_alive(), f"the replay ran out of its {N} events before the last restart was ready"
        time.sleep(TAIL_S)
        kills_done.set()
        thread.join(timeout=60)
        assert not thread.is_alive(), "the replay did not finish"
        sent_n = result["replay"].events_sent
        sent = {f"crash-{i}" for i in range(sent_n)}
        assert result["replay"].labels_sent == sent_n

        # Every event gets its prediction, its example and its champion outcome once the
        # loop has resumed (this is where a lost record would show: nothing would ever
        # answer for it); then every service on the way drains, so that a late duplicate
        # cannot come after the reads below.
        wait_until(
            "every sent event predicted, joined and scored",
            lambda: _complete(bootstrap, topics, serde, sent),
            120,
            stack.check,
            every_s=2,
        )
        wait_drained({name: ports[name] for name in SERVICES[:4]}, check=stack.check)
    finally:
        stack.stop_services()

    raw = [e for _, e in read_decoded(bootstrap, topics.name(EVENTS_RAW), serde, "RawEvent")]
    raw_labels = [x for _, x in read_decoded(bootstrap, topics.name(LABELS_RAW), serde, "Label")]
    clean = read_decoded(bootstrap, topics.name(EVENTS_CLEAN), serde, "RawEvent")
    vectors = [v for _, v in read_decoded(bootstrap, topics.name(FEATURES), serde, "FeatureVector")]
    predictions = [p for _, p in read_decoded(bootstrap, topics.name(PREDICTIONS), serde, "Prediction")]
    examples = [e for _, e in read_decoded(bootstrap, topics.name(EXAMPLES), serde, "LabeledExample")]
    outcomes = [o for _, o in read_decoded(bootstrap, topics.name(OUTCOMES), serde, "Outcome")]
    dead = [d for _, d in read_decoded(bootstrap, topics.name(DEADLETTER), serde, "DeadLetter")]
    labels_clean = [x for _, x in read_decoded(bootstrap, topics.name(LABELS_CLEAN), serde, "Label")]
    alerts = [a for _, a in read_decoded(bootstrap, topics.name(ALERTS), serde, "DriftAlert")]
    champion = [p for p in predictions if p["role"] == "champion"]
    lost = sent - {p["event_id"] for p in champion}
    codes = Counter(d["error_code"] for d in dead)

    # Window state: recompute every vector from the clean events, in the order the features
    # service read them (per partition, by offset), with a fresh state per entity.
    common = CommonSettings(**{"features_windows": WINDOWS})
    spec = FeatureSpec.parse(common.effective_feature_set_version, WINDOWS)
    by_partition: dict[int, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    for rec, event in clean:
        by_partition[rec.partition].append((rec.offset, event))
    expected: dict[str, dict[str, float]] = {}
    for events in by_partition.values():
        state: dict[str, Any] = {}
        for _, event in sorted(events, key=lambda x: x[0]):
            vector, outcome = spec.update(event, state.get(event["entity_id"]))
            if outcome.status != "too_late":
                state[event["entity_id"]] = outcome.state
            expected.setdefault(event["event_id"], vector["features"])
    first_vector: dict[str, dict[str, float]] = {}
    for v in vectors:
        first_vector.setdefault(v["event_id"], v["features"])
    mismatched = [eid for eid, feats in first_vector.items() if feats != pytest.approx(expected.get(eid))]

    # Every output topic, as a read_committed consumer sees it: one record per effect.
    duplicates = {
        "events.clean": count_duplicates([e for _, e in clean]),
        "labels.clean": count_duplicates(labels_clean),
        "features": count_duplicates(vectors),
        "examples": count_duplicates(examples),
        "predictions": count_duplicates(predictions, "role", "model_version"),
        "outcomes": count_duplicates(outcomes, "role"),
        "alerts": count_duplicates([a for a in alerts if a["event_id"]], "kind", "detector", "subject"),
    }
    with capsys.disabled():
        print(
            f"\ncrash test: {len(sent)} events sent, {len(kills)} SIGKILLs, lost {len(lost)}, "
            f"duplicate predictions {count_duplicates(champion)}, "
            f"duplicate clean events {count_duplicates([e for _, e in clean])}, "
            f"duplicate examples {count_duplicates(examples)}, dead letters {dict(codes)}",
            file=sys.stderr,
        )
        for name, secs in kills:
            print(f"  {name:<11} ready {secs:5.1f} s after its restart", file=sys.stderr)
        print(f"  duplicates per output topic (read_committed): {duplicates}", file=sys.stderr)
        slow = {name: round(secs, 1) for name, secs in kills if secs > READY_TARGET_S}
        print(f"  restarts ready later than {READY_TARGET_S:.0f} s: {slow or 'none'}", file=sys.stderr)

    assert len(kills) == 3 * len(SERVICES)
    # What the replay counted is what reached the broker: each event and label once.
    assert _once_each(raw, sent) == {} and _once_each(raw_labels, sent) == {}
    assert not lost, f"{len(lost)} events never got a prediction, e.g. {sorted(lost)[:5]}"
    if service_env.get("DRIFTLOOP_BROKER_ENGINE") != "tansu":
        # Exactly-once: a kill aborts what the batch in hand wrote, so nothing is seen twice.
        assert codes == {}, codes
        assert duplicates == dict.fromkeys(duplicates, 0), duplicates
    # Only redeliveries are rejected: a record seen again after a kill is a duplicate.
    assert set(codes) <= {"duplicate_event"}, codes
    # Where the design promises one effect per event_id even at-least-once: the joins. (On
    # Tansu, without transactions, a kill between the delivery of a batch's output and of
    # its changelog can let ingestion or inference emit an event twice; the joins
    # downstream absorb them.)
    wrong = _once_each(examples, sent)
    assert not wrong, f"{len(wrong)} events without exactly one example, e.g. {list(wrong.items())[:5]}"
    wrong = _once_each([o for o in outcomes if o["role"] == "champion"], sent)
    assert not wrong, f"{len(wrong)} events without exactly one champion outcome, e.g. {list(wrong.items())[:5]}"
    # The static baseline predicts from the first trained version on: not every event has
    # its outcome, none has two.
    assert count_duplicates([o for o in outcomes if o["role"] == "baseline"]) == 0
    assert len(first_vector) == len(sent)
    assert not mismatched, f"{len(mismatched)} vectors differ from the recomputation, e.g. {mismatched[:3]}"
    assert all(secs <= RESUME_LIMIT_S for _, secs in kills)
