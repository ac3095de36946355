"""Prometheus helpers: the metrics every service exposes, on an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

EVENT_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ServiceMetrics:
    """The metrics common to every service, labelled by service name."""

    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.service = service
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.records_in = Counter("driftloop_records_in_total", "Records consumed", ["service", "topic"], registry=r)
        self.records_out = Counter("driftloop_records_out_total", "Records produced", ["service", "topic"], registry=r)
        self.dead_letters = Counter(
            "driftloop_dead_letters_total", "Records sent to the dead-letter topic", ["service", "code"], registry=r
        )
        self.poison_batches = Counter(
            "driftloop_poison_batches_total",
            "Record batches skipped because they cannot be decoded (dead-lettered by offset range)",
            ["service", "topic"],
            registry=r,
        )
        self.transactions = Counter(
            "driftloop_transactions_total",
            "Kafka transactions of batches (one per input partition and batch) under exactly-once, by outcome",
            ["service", "outcome"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            "driftloop_batch_processing_seconds",
            "Time to process one consumed batch",
            ["service"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.up = Gauge("driftloop_service_up", "1 while the service runs", ["service"], registry=r)
        self.ready = Gauge(
            "driftloop_service_ready",
            "1 once the service owns partitions and has recovered their state",
            ["service"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "driftloop_consumer_lag_records",
            "Records in a source partition not yet processed (high watermark minus next offset)",
            ["service", "topic", "partition"],
            registry=r,
        )
        # What a service holds of its input in memory, beyond aiokafka's prefetch (bounded by
        # max_partition_fetch_bytes): the batches handled whose output is not yet delivered.
        self.inflight_batches = Gauge(
            "driftloop_inflight_batches",
            "Batches handled whose output is not yet delivered (at most MAX_UNSETTLED + 1)",
            ["service"],
            registry=r,
        )
        self.inflight_records = Gauge(
            "driftloop_inflight_records",
            "Input records of the batches handled whose output is not yet delivered",
            ["service"],
            registry=r,
        )
        self.event_latency = Histogram(
            "driftloop_event_latency_seconds",
            "Time from the event entering Kafka to this service's output for it",
            ["service"],
            buckets=EVENT_LATENCY_BUCKETS,
            registry=r,
        )

    def serve(self, addr: str, port: int) -> None:
        """Expose /metrics over HTTP; port 0 disables it."""
        if port:
            start_http_server(port, addr=addr, registry=self.registry)
