"""Broker loss: the five services on a three-broker Apache Kafka cluster (replication factor
3, min.insync.replicas 2) under a paced replay. The broker that leads the most partitions
is SIGKILLed three times, and restarted on its log dir after each kill once the loop has
resumed. Every event sent must get a champion prediction, none may get two, and the loop
must produce again after each kill (printed; the issue's target is 15 s, the bound
asserted is a generous 60 s).

How long the loop stalls is mostly Kafka's: a SIGKILLed broker is fenced, and its
partitions get new leaders, only once its session with the controller expires
(broker.session.timeout.ms, 9 s by default); until then acks=all waits on it.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from waiting import read_values, wait_drained, wait_until

from driftloop.replay import replay
from driftloop.runner import Stack, demo_env
from driftloop.shared.broker import KafkaCluster
from driftloop.shared.kafka import tail_topic
from driftloop.shared.serde import Serde
from driftloop.shared.topics import DEADLETTER, EVENTS_CLEAN, EXAMPLES, OUTCOMES, PREDICTIONS, Topics
from driftloop.streams import Dataset, sea_stream

pytestmark = pytest.mark.e2e
SERVICES = ("ingestion", "features", "inference", "monitoring", "retraining")
# The replay runs until the last kill has been recovered from and TAIL_S more seconds have
# passed, so every kill is under load by construction; N only bounds it.
N = 30000
RATE = 100.0  # events/s
ENTITIES = 16  # keys enough to reach every partition
KILLS = 3
FIRST_KILL_AT_S = 8.0  # into the replay
SETTLE_S = 1.0  # of steady flow between a restarted broker being in sync and the next kill
TAIL_S = 5.0
TARGET_S = 15.0  # the issue's: printed against, not asserted
RECOVERY_LIMIT_S = 60.0
ACTIVE_WINDOW_S = 5.0  # a partition with champion predictions in this window before a kill is flowing


@dataclass
class Watcher:
    """Champion predictions as driftloop's own reader (tail_topic) receives them, in a
    thread of its own: (partition, event_time of the event, wall time received)."""

    bootstrap: str
    topic: str
    serde: Serde
    seen: list[tuple[int, int, float]] = field(default_factory=list)
    error: list[BaseException] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        try:
            asyncio.run(self._consume())
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error.append(exc)

    async def _consume(self) -> None:
        task = asyncio.ensure_future(self._read())
        while not self._stop.is_set() and not task.done():
            await asyncio.sleep(0.1)
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task

    async def _read(self) -> None:
        async for batch in tail_topic(self.bootstrap, self.topic, poll_ms=100):
            now = time.time()
            for r in batch:
                p = self.serde.decode("Prediction", r.value)
                if p["role"] == "champion":
                    self.seen.append((r.partition, int(p["event_time"]), now))

    def flowing_before(self, at: float) -> set[int]:
        """Partitions that received champion predictions in the window before ``at``."""
        return {p for p, _, got in list(self.seen) if at - ACTIVE_WINDOW_S <= got <= at}

    def resumed(self, at: float, partitions: set[int]) -> dict[int, float]:
        """Per partition: seconds from ``at`` to the first champion prediction received for
        an event sent after ``at`` (the loop, end to end, carries new events again there)."""
        first: dict[int, float] = {}
        for p, event_time, got in list(self.seen):
            if p in partitions and p not in first and event_time >= at * 1000:
                first[p] = got - at
        return first


@dataclass
class Kill:
    node: int
    led: int  # partitions it led when it was killed
    resumed_s: float  # until every flowing partition carried predictions of new events again
    restart_s: float  # from its restart until Metadata named every broker again
    in_sync_s: float  # then until every ISR was full again


def _wait_resumed(watcher: Watcher, at: float, flowing: set[int], stack: Stack) -> float:
    while True:
        stack.check()
        assert not watcher.error, f"the prediction watcher failed: {watcher.error[0]!r}"
        resumed = watcher.resumed(at, flowing)
        if flowing <= resumed.keys():
            return max(resumed.values())
        if time.time() - at > RECOVERY_LIMIT_S:
            raise AssertionError(
                f"predictions did not flow again within {RECOVERY_LIMIT_S:.0f} s of the kill on every partition "
                f"(flowing before: {sorted(flowing)}, resumed: {sorted(resumed)})"
            )
        time.sleep(0.1)


def _kill_busiest(cluster: KafkaCluster, watcher: Watcher, stack: Stack) -> Kill:
    leaders = cluster.partition_leaders()
    victim = cluster.busiest_leader()
    led = sum(1 for leader in leaders.values() if leader == victim)
    at = time.time()
    flowing = watcher.flowing_before(at)
    assert flowing, "no predictions were flowing before the kill"
    cluster.kill(victim)
    resumed = _wait_resumed(watcher, at, flowing, stack)
    restarted = time.monotonic()
    cluster.restart(victim)
    restart_s = time.monotonic() - restarted
    in_sync_s = cluster.wait_in_sync(timeout_s=90)
    return Kill(victim, led, resumed, restart_s, in_sync_s)


def _prediction_key(p: dict[str, Any]) -> tuple[str, str, int | None]:
    # Several challengers may shadow the champion at once, each predicting every event.
    return (p["event_id"], p["role"], int(p["model_version"]) if p["role"] == "challenger" else None)


def _duplicates(keys: list[Any]) -> int:
    return sum(c - 1 for c in Counter(keys).values())


def _all_predicted(bootstrap: str, topics: Topics, serde: Serde, sent: set[str]) -> bool:
    predictions = read_values(bootstrap, topics.name(PREDICTIONS), serde, "Prediction")
    return sent <= {p["event_id"] for p in predictions if p["role"] == "champion"}


def _env(cluster: KafkaCluster, topics: Topics, tmp_path: Path) -> dict[str, str]:
    return {
        **demo_env(),
        "KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrap_servers,
        "DRIFTLOOP_BROKER_ENGINE": "kafka",
        # Every topic the stack and the services create (changelogs included) on all three.
        "DRIFTLOOP_REPLICATION_FACTOR": "3",
        "DRIFTLOOP_TOPIC_PREFIX": topics.prefix,
        "DRIFTLOOP_PARTITIONS": str(topics.partitions),
        "DRIFTLOOP_ARTIFACT_STORE": f"file://{tmp_path / 'artifacts'}",
        "DRIFTLOOP_DATA_DIR": str(tmp_path / "state"),
        "DRIFTLOOP_OFFLINE_STORE": str(tmp_path / "offline-store"),
    }


def test_broker_leading_most_partitions_killed_three_times_loses_nothing(
    kafka_cluster: KafkaCluster, serde: Serde, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topics = Topics("loss.", 4)
    env = _env(kafka_cluster, topics, tmp_path)
    bootstrap = kafka_cluster.bootstrap_servers
    dataset = Dataset("sea", sea_stream(N).rows, [], [f"ent-{i % ENTITIES}" for i in range(N)])
    stack = Stack(env=env, log_dir=tmp_path / "logs", services=SERVICES)
    watcher = Watcher(bootstrap, topics.name(PREDICTIONS), serde)
    result: dict[str, Any] = {}
    kills: list[Kill] = []
    done = threading.Event()
    ports = {name: int(env[f"DRIFTLOOP_{name.upper()}_METRICS_PORT"]) for name in SERVICES}
    try:
        stack.start()
        stack.wait_ready()
        watcher.start()

        def run_replay() -> None:
            result["replay"] = asyncio.run(
                replay(
                    bootstrap,
                    topics,
                    serde,
                    dataset,
                    run_id="loss",
                    label_delay=50,
                    rate=RATE,
                    options={"enable_idempotence": True},
                    until=done.is_set,
                )
            )

        thread = threading.Thread(target=run_replay, daemon=True)
        started = time.monotonic()
        thread.start()
        time.sleep(max(0.0, started + FIRST_KILL_AT_S - time.monotonic()))
        for _ in range(KILLS):
            assert thread.is_alive(), "the replay ended before a kill"
            kills.append(_kill_busiest(kafka_cluster, watcher, stack))
            time.sleep(SETTLE_S)
        assert thread.is_alive(), f"the replay ran out of its {N} events before the last kill was recovered"
        time.sleep(TAIL_S)
        done.set()
        thread.join(timeout=120)
        assert not thread.is_alive(), "the replay did not finish"
        sent_n = result["replay"].events_sent
        sent = {f"loss-{i}" for i in range(sent_n)}
        wait_until(
            "every sent event predicted",
            lambda: _all_predicted(bootstrap, topics, serde, sent),
            120,
            stack.check,
            every_s=2,
        )
        # Nothing is left to come out of the serving path: a late duplicate would be read below.
        wait_drained({name: ports[name] for name in SERVICES[:3]}, check=stack.check)
    finally:
        watcher.stop()
        stack.stop_services()

    predictions = read_values(bootstrap, topics.name(PREDICTIONS), serde, "Prediction")
    champion = [p for p in predictions if p["role"] == "champion"]
    lost = sent - {p["event_id"] for p in champion}
    duplicates: Counter[str] = Counter()
    for (_, role, _), n in Counter(map(_prediction_key, predictions)).items():
        duplicates[role] += n - 1
    duplicates = +duplicates  # the roles with duplicates only
    clean = read_values(bootstrap, topics.name(EVENTS_CLEAN), serde, "RawEvent")
    examples = read_values(bootstrap, topics.name(EXAMPLES), serde, "LabeledExample")
    outcomes = read_values(bootstrap, topics.name(OUTCOMES), serde, "Outcome")
    dead = Counter(d["error_code"] for d in read_values(bootstrap, topics.name(DEADLETTER), serde, "DeadLetter"))
    with capsys.disabled():
        print(
            f"\nbroker loss: {len(sent)} events sent at {RATE:.0f}/s, {len(kills)} broker SIGKILLs, lost {len(lost)}, "
            f"duplicate predictions {dict(duplicates) or 0}, duplicate clean events "
            f"{_duplicates([e['event_id'] for e in clean])}, duplicate examples "
            f"{_duplicates([e['event_id'] for e in examples])}, duplicate champion outcomes "
            f"{_duplicates([o['event_id'] for o in outcomes if o['role'] == 'champion'])}, dead letters {dict(dead)}",
            file=sys.stderr,
        )
        for k in kills:
            verdict = "within" if k.resumed_s <= TARGET_S else "OVER"
            print(
                f"  node {k.node} (leading {k.led} partitions) killed: predictions flowed again after "
                f"{k.resumed_s:5.1f} s ({verdict} the {TARGET_S:.0f} s target); restarted, ready "
                f"{k.restart_s:4.1f} s, every ISR full {k.in_sync_s:4.1f} s later",
                file=sys.stderr,
            )

    assert len(kills) == KILLS
    assert not lost, f"{len(lost)} events never got a prediction, e.g. {sorted(lost)[:5]}"
    assert not duplicates, f"duplicate predictions per (event_id, role): {dict(duplicates)}"
    assert all(k.resumed_s <= RECOVERY_LIMIT_S for k in kills)
