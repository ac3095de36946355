"""Ingestion service shell: raw bytes in, validated Avro out, everything else dead-lettered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import ConsumerRecord
from prometheus_client import Counter

from driftloop.services.ingestion import http
from driftloop.services.ingestion.contract import Contract
from driftloop.services.ingestion.dedup import Deduplicator
from driftloop.services.ingestion.validate import Limits, Validator, decode, validate_event, validate_label
from driftloop.shared import http as shared_http
from driftloop.shared.errors import DuplicateEvent
from driftloop.shared.runtime import Context, Service, run_service
from driftloop.shared.settings import IngestionSettings
from driftloop.shared.topics import EVENTS_CLEAN, EVENTS_RAW, LABELS_CLEAN, LABELS_RAW, Topic

SERVICE = "ingestion"
#: How long a stop waits for the HTTP requests in flight to be answered.
HTTP_STOP_TIMEOUT_S = 5.0


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
        self.source = source
        #: What HTTP ingest judges a posted record by: parse's functions, then handle's contract.
        self.checks = http.Checks(self.record, validate, self.limits, svc.serde, check)
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
        self.svc = svc
        # ConfigError on a missing or malformed contract, before any record is read.
        contract = Contract.load(Path(svc.settings.contract)) if svc.settings.contract else None
        self.events = Pipeline(
            svc, EVENTS_RAW, EVENTS_CLEAN, validate_event, contract.check_event if contract else None
        )
        self.labels = Pipeline(
            svc, LABELS_RAW, LABELS_CLEAN, validate_label, contract.check_label if contract else None
        )
        self.pipelines: dict[http.Kind, Pipeline] = {"events": self.events, "labels": self.labels}
        self.http_records = Counter(
            "driftloop_http_ingest_records_total",
            "Records posted over HTTP: accepted, rejected (written to be dead-lettered) or not written",
            ["kind", "status"],
            registry=svc.metrics.registry,
        )
        for kind in self.pipelines:
            for status in ("accepted", "rejected", "unwritten"):
                self.http_records.labels(kind, status)
        s = svc.settings
        app = http.build_app(self, shared_http.HttpMetrics(svc.metrics.registry))
        self.http = shared_http.Serving(app, svc.common.metrics_addr, s)
        if s.http_port:
            svc.task(self.serve_http)
            svc.on_shutdown(self.stop_http)

    # --- HTTP ingest (services/ingestion/http.py) ----------------------------------------------

    @property
    def ready(self) -> bool:
        return self.http.started  # False from the stop on: ready answers 503

    @property
    def max_records(self) -> int:
        return self.svc.settings.http_max_records

    def checks(self, kind: http.Kind) -> http.Checks:
        return self.pipelines[kind].checks

    async def produce(self, kind: http.Kind, records: Sequence[http.Screened]) -> None:
        # Through the raw topic, invalid records included: the stream then ingests or
        # dead-letters each as it does any producer's, so the two paths cannot differ.
        topic = self.pipelines[kind].source
        sent = await asyncio.gather(
            *(self.svc.publisher.send_bytes(topic, r.key, r.data) for r in records), return_exceptions=True
        )
        failed = [exc for exc in sent if isinstance(exc, BaseException)]
        if failed:
            self.http_records.labels(kind, "unwritten").inc(len(failed))
            self.svc.log.error("http_ingest_unwritten", kind=kind, count=len(failed), error=repr(failed[0])[:300])
            raise http.NotDelivered(
                f"{len(failed)} of {len(records)} records were not written to {topic.short}: "
                f"{type(failed[0]).__name__}; send the request again"
            )
        rejected = sum(r.error is not None for r in records)
        self.http_records.labels(kind, "accepted").inc(len(records) - rejected)
        if rejected:
            self.http_records.labels(kind, "rejected").inc(rejected)

    async def serve_http(self) -> None:
        await self.http.serve(self.svc.log)

    async def stop_http(self) -> None:
        # The requests in flight are answered while the producer still runs: a record that
        # is written gets its 202.
        await self.http.stop(HTTP_STOP_TIMEOUT_S)


def main() -> None:
    run_service(SERVICE, IngestionSettings, Ingestion)
