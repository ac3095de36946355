"""Waiting for records on a topic of the real broker, shared by the integration tests."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Callable

from aiokafka import ConsumerRecord

from shared.kafka import read_topic


def wait_for_records(
    bootstrap: str, topic: str, n: int, timeout_s: float = 60.0, check: Callable[[], None] | None = None
) -> list[ConsumerRecord]:
    """Every record of ``topic`` once there are at least ``n`` (or whatever is there at the
    timeout: the caller's assertions then say what is missing). ``check`` runs before each
    read, e.g. a Stack's check that raises as soon as a service has died."""
    deadline = time.monotonic() + timeout_s
    while True:
        if check is not None:
            check()
        recs = asyncio.run(read_topic(bootstrap, topic))
        if len(recs) >= n or time.monotonic() > deadline:
            return recs
        time.sleep(0.5)


def scrape_metrics(port: int) -> str:
    """The text a service's /metrics endpoint serves."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return str(resp.read().decode())
