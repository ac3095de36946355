"""Waiting for records on a topic of the real broker, shared by the integration tests."""

from __future__ import annotations

import asyncio
import time

from aiokafka import ConsumerRecord

from shared.kafka import read_topic


def wait_for_records(bootstrap: str, topic: str, n: int, timeout_s: float = 60.0) -> list[ConsumerRecord]:
    """Every record of ``topic`` once there are at least ``n`` (or whatever is there at the
    timeout: the caller's assertions then say what is missing)."""
    deadline = time.monotonic() + timeout_s
    while True:
        recs = asyncio.run(read_topic(bootstrap, topic))
        if len(recs) >= n or time.monotonic() > deadline:
            return recs
        time.sleep(0.5)
