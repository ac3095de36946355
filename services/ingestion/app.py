"""Ingestion service shell: raw bytes in, validated Avro out, everything else dead-lettered."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import ConsumerRecord

from driftloop.services.ingestion.contract import Contract
from driftloop.services.ingestion.dedup import Deduplicator
from driftloop.services.ingestion.validate import Limits, Validator, decode, validate_event, validate_label
from driftloop.shared.errors import DuplicateEvent
from driftloop.shared.runtime import Context, Service, run_service
from driftloop.shared.settings import IngestionSettings
from driftloop.shared.topics import EVENTS_CLEAN, EVENTS_RAW, LABELS_CLEAN, LABELS_RAW, Topic

SERVICE = "ingestion"


@dataclass(frozen=True, slots=True)
class Parsed:
    """A raw record, decoded and validated."""

    value: dict[str, Any]
    #: The producer set ingest_time itself (the record is then encoded again, not stamped).
    stamped: bool

    @property
    def event_id(self) -> str:
        return str(self.value["event_id"])


class Pipeline:
    """One raw topic to its clean topic: events.raw to events.clean, or labels."""

    def __init__(
        self,
        svc: Service[IngestionSettings],
        source: Topic[bytes],
        sink: Topic[Any],
        validate: Validator,
        check: Any,
    ) -> None:
        assert sink.record is not None
        self.svc = svc
        self.record = sink.record
        self.sink = sink
        self.validate = validate
        self.check = check
        self.limits = Limits(svc.settings.max_record_bytes, int(svc.settings.max_lateness_s * 1000))
        self.dedup = Deduplicator(svc.store(f"seen-{self.record.lower()}"), int(svc.settings.dedup_ttl_s * 1000))
        svc.on(source, self.handle, decode=self.parse)

    def parse(self, message: ConsumerRecord) -> Parsed:
        obj = decode(message.value, self.record, self.svc.serde, self.limits)
        value = self.validate(obj, int(time.time() * 1000), self.limits)
        return Parsed(value, obj.get("ingest_time") is not None)

    async def handle(self, parsed: Parsed, ctx: Context) -> None:
        value, msg = parsed.value, ctx.message
        if self.check is not None:
            self.check(value)
        if self.dedup.seen(value["event_id"], msg.timestamp):
            raise DuplicateEvent(f"{self.record} {value['event_id']} was already ingested")
        data = None
        if self.sink is EVENTS_CLEAN:
            if not parsed.stamped:
                # Validated as it is: the bytes that came in go on, stamped.
                data = self.svc.serde.with_ingest_time(msg.value, msg.timestamp)
            value["ingest_time"] = msg.timestamp
        if data is not None:
            await ctx.send_bytes(self.sink, value["entity_id"].encode(), data)
        else:
            await ctx.send(self.sink, value)
        ctx.observe_latency(msg.timestamp)


class Ingestion:
    def __init__(self, svc: Service[IngestionSettings]) -> None:
        # ConfigError on a missing or malformed contract, before any record is read.
        contract = Contract.load(Path(svc.settings.contract)) if svc.settings.contract else None
        self.events = Pipeline(
            svc, EVENTS_RAW, EVENTS_CLEAN, validate_event, contract.check_event if contract else None
        )
        self.labels = Pipeline(
            svc, LABELS_RAW, LABELS_CLEAN, validate_label, contract.check_label if contract else None
        )


def main() -> None:
    run_service(SERVICE, IngestionSettings, Ingestion)
