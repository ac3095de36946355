"""Ingestion service shell: raw bytes in, validated Avro out, everything else dead-lettered."""

from __future__ import annotations

import time
from pathlib import Path

from driftloop.services.ingestion.contract import Contract
from driftloop.services.ingestion.dedup import Deduplicator
from driftloop.services.ingestion.validate import Limits, Validator, decode, validate_event, validate_label
from driftloop.shared.app import EventT, ServiceContext, StreamT, build_context, run_worker
from driftloop.shared.errors import DuplicateEvent
from driftloop.shared.settings import IngestionSettings

SERVICE = "ingestion"


def wire(ctx: ServiceContext[IngestionSettings]) -> None:
    app = ctx.app
    limits = Limits(ctx.settings.max_record_bytes, int(ctx.settings.max_lateness_s * 1000))
    # ConfigError on a missing or malformed contract, before any record is read.
    contract = Contract.load(Path(ctx.settings.contract)) if ctx.settings.contract else None

    def pipeline(source: str, sink: str, record: str, validate: Validator) -> None:
        dedup = Deduplicator(ctx.store(f"seen-{record.lower()}"), int(ctx.settings.dedup_ttl_s * 1000))
        out = ctx.raw_topic(sink)
        check = None if contract is None else contract.check_event if record == "RawEvent" else contract.check_label

        async def handle(event: EventT) -> None:
            msg = event.message
            obj = decode(msg.value, record, ctx.serde, limits)
            value = validate(obj, int(time.time() * 1000), limits)
            ctx.event_id = value["event_id"]
            if check is not None:
                check(value)
            if dedup.seen(value["event_id"], msg.timestamp):
                raise DuplicateEvent(f"{record} {value['event_id']} was already ingested")
            data = None
            if record == "RawEvent":
                if obj.get("ingest_time") is None:
                    # Validated as it is: the bytes that came in go on, stamped.
                    data = ctx.serde.with_ingest_time(msg.value, msg.timestamp)
                value["ingest_time"] = msg.timestamp
            await ctx.send(out, value["entity_id"], data or ctx.serde.encode(record, value))
            ctx.observe_latency(msg.timestamp)

        async def process(stream: StreamT) -> None:
            await ctx.each(stream, handle)

        app.agent(ctx.source(source), name=f"{SERVICE}.{source}")(process)

    pipeline("events.raw", "events.clean", "RawEvent", validate_event)
    pipeline("labels.raw", "labels.clean", "Label", validate_label)


def main() -> None:
    ctx = build_context(SERVICE, IngestionSettings)
    wire(ctx)
    run_worker(ctx)
