"""Waiting on the real broker's topics and on the services' /metrics, shared by the
integration and e2e tests: poll for a condition, never sleep for a guessed time."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiokafka import ConsumerRecord
from prometheus_client.parser import text_string_to_metric_families

from driftloop.shared.kafka import read_topic
from driftloop.shared.runtime.runner import LAG_REFRESH_S as RUNTIME_LAG_REFRESH_S
from driftloop.shared.serde import Serde

T = TypeVar("T")
# How often the runtime refreshes driftloop_consumer_lag_records.
LAG_REFRESH_S = RUNTIME_LAG_REFRESH_S


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


def wait_until(
    what: str,
    probe: Callable[[], T],
    timeout_s: float = 60.0,
    check: Callable[[], None] | None = None,
    every_s: float = 0.5,
) -> T:
    """``probe()``'s first truthy result; an AssertionError naming ``what`` at the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        if check is not None:
            check()
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)


def scrape_metrics(port: int) -> str:
    """The text a service's /metrics endpoint serves."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return str(resp.read().decode())


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The sum of the samples of ``name`` whose labels include ``labels``, in a /metrics
    text; None when there is no such sample."""
    values = [
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    return sum(values) if values else None


def wait_for_metric(
    port: int,
    name: str,
    ok: Callable[[float], bool],
    timeout_s: float = 60.0,
    check: Callable[[], None] | None = None,
    **labels: str,
) -> float:
    """The value of ``metric_value(name, **labels)`` on the service at ``port`` once
    ``ok(value)``; an AssertionError with the last value seen at the timeout."""
    last: list[float | None] = [None]

    def probe() -> tuple[float] | None:
        last[0] = value = metric_value(scrape_metrics(port), name, **labels)
        return (value,) if value is not None and ok(value) else None

    try:
        return wait_until(f"{name}{labels or ''}", probe, timeout_s, check, every_s=0.2)[0]
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last value {last[0]}") from None


def wait_drained(ports: Mapping[str, int], timeout_s: float = 60.0, check: Callable[[], None] | None = None) -> None:
    """Until each service at ``ports`` has delivered the output of every record on its
    source topics: its consumer lag is 0 on every partition and its records_in_total has
    not moved across a full lag refresh. Called in pipeline order once no producer writes
    any more, nothing is left to come out of them afterwards (a late duplicate included)."""
    for service, port in ports.items():
        deadline = time.monotonic() + timeout_s
        seen: tuple[float, float] | None = None  # (records in, when) at a scrape with lag 0
        while True:
            if check is not None:
                check()
            text = scrape_metrics(port)
            lag = metric_value(text, "driftloop_consumer_lag_records", service=service)
            records_in = metric_value(text, "driftloop_records_in_total", service=service) or 0.0
            now = time.monotonic()
            if lag != 0 or seen is None or seen[0] != records_in:
                seen = (records_in, now) if lag == 0 else None
            elif now - seen[1] > LAG_REFRESH_S + 0.5:
                break
            if now > deadline:
                raise AssertionError(f"{service} not drained after {timeout_s:.0f} s: lag {lag}, {records_in} in")
            time.sleep(0.2)


def read_decoded(bootstrap: str, topic: str, serde: Serde, record: str) -> list[tuple[Any, dict[str, Any]]]:
    """Every record of ``topic`` (read_committed), with its value decoded as ``record``."""
    return [(r, serde.decode(record, r.value)) for r in asyncio.run(read_topic(bootstrap, topic))]


def read_values(bootstrap: str, topic: str, serde: Serde, record: str) -> list[dict[str, Any]]:
    return [v for _, v in read_decoded(bootstrap, topic, serde, record)]


def count_duplicates(records: list[dict[str, Any]], *fields: str) -> int:
    """Records beyond the first with the same event_id (and the same ``fields``)."""
    counts = Counter((r["event_id"], *(r[f] for f in fields)) for r in records)
    return sum(c - 1 for c in counts.values())


def readme_curls(title: str, count: int, readme_port: int, port: int) -> list[str]:
    """The ``count`` curl commands of the bash block under the README's ``### title``, pointed
    at ``port`` instead of ``readme_port``, failing on an HTTP error but printing its body."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (scripts/ensure-tools installs it)")
    text = (Path(__file__).parents[1] / "README.md").read_text()
    block = text.split(f"\n### {title}\n", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    commands = re.split(r"\n(?=curl )", block.strip())
    assert len(commands) == count and all(c.startswith("curl ") for c in commands), commands
    return [
        c.replace(f"127.0.0.1:{readme_port}", f"127.0.0.1:{port}").replace("curl -s", "curl -sS --fail-with-body")
        for c in commands
    ]


def fuzz_openapi(base: str, tmp_path: Path, path_parameters: dict[str, str] | None = None) -> int:
    """schemathesis against the OpenAPI document at ``base``/openapi.json: fails on any 5xx or
    an answer slower than 5 s; returns how many requests it generated (each one passed).
    ``path_parameters`` fixes path parameters (a model's name), or most requests stop at 404."""
    config = tmp_path / "schemathesis.toml"
    fixed = "".join(f'"path.{k}" = "{v}"\n' for k, v in (path_parameters or {}).items())
    config.write_text(f"[parameters]\n{fixed}" if fixed else "")
    command = [str(Path(sys.executable).with_name("st")), "--config-file", str(config), "run", f"{base}/openapi.json"]
    command += ["--checks", "not_a_server_error", "--max-examples", "40", "--seed", "7"]
    command += ["--request-timeout", "10", "--max-response-time", "5"]
    fuzz = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert fuzz.returncode == 0, fuzz.stdout[-4000:] + fuzz.stderr[-2000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", fuzz.stdout)
    assert counts and counts[1] == counts[2], fuzz.stdout[-1500:]
    return int(counts[1])
