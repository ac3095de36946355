"""Dead letters: a record a handler cannot take, with its original bytes and an error code."""

from __future__ import annotations

import time
import traceback
from typing import Any

from aiokafka import ConsumerRecord

from driftloop.shared import poison
from driftloop.shared.errors import DriftloopError, InvalidRecord, PoisonBatch
from driftloop.shared.kafka import OutRecord
from driftloop.shared.metrics import ServiceMetrics
from driftloop.shared.records import DeadLetter
from driftloop.shared.serde import Serde
from driftloop.shared.topics import DEADLETTER

# A poison batch's own bytes ride in its dead letter up to this size: the dead letter must fit
# in one produce request; a bigger batch stays readable at its offsets in the source topic.
POISON_RAW_MAX_BYTES = 64 * 1024


class DeadLetters:
    """Builds dead-letter records for one service, and counts and logs each."""

    def __init__(self, service: str, topic: str, serde: Serde, metrics: ServiceMetrics, log: Any) -> None:
        self.service = service
        self.topic = topic
        self.serde = serde
        self.metrics = metrics
        self.log = log

    def count(self, code: str) -> None:
        """Count a dead letter a shell wrote itself (an expired join entry, say)."""
        self.metrics.dead_letters.labels(self.service, code).inc()

    def letter(self, msg: ConsumerRecord, exc: BaseException, event_id: str | None = None) -> OutRecord:
        """The dead letter of ``msg``: counted and logged here, produced by the caller."""
        code = exc.code if isinstance(exc, DriftloopError) else "internal_error"
        record: DeadLetter = {
            "original_key": msg.key,
            "original_value": msg.value,
            "source_topic": msg.topic,
            "source_partition": int(msg.partition),
            "source_offset": int(msg.offset),
            "service": self.service,
            "error_code": code,
            "error_message": str(exc)[:1000],
            "event_id": event_id,
            "time": int(time.time() * 1000),
        }
        key = msg.key if msg.key else (event_id or f"{msg.topic}:{msg.partition}:{msg.offset}").encode()
        self.count(code)
        log = self.log.bind(
            topic=msg.topic, partition=msg.partition, offset=msg.offset, event_id=event_id, error_code=code
        )
        if isinstance(exc, InvalidRecord):
            log.info("record_dead_lettered", error=str(exc)[:200])
        else:
            log.error("record_failed", error=repr(exc)[:500], traceback=traceback.format_exc(limit=5))
        return (self.topic, key, self.serde.encode(DEADLETTER, record), None)

    def poison_letter(self, skipped: poison.Isolated) -> OutRecord:
        """Count, log and dead-letter a skipped poison batch by its offset range."""
        tp, batch = skipped.tp, skipped.batch
        self.metrics.poison_batches.labels(self.service, tp.topic).inc()
        self.log.error("poison_batch_skipped", **poison.log_fields(skipped))
        error = PoisonBatch(f"record batch at offsets {batch.first}-{batch.last} cannot be decoded: {skipped.error!r}")
        raw = batch.raw if len(batch.raw) <= POISON_RAW_MAX_BYTES else None
        source = ConsumerRecord(
            topic=tp.topic,
            partition=tp.partition,
            offset=batch.first,
            timestamp=-1,
            timestamp_type=-1,
            key=None,
            value=raw,
            checksum=None,
            serialized_key_size=-1,
            serialized_value_size=len(raw) if raw else -1,
            headers=(),
        )
        return self.letter(source, error)
