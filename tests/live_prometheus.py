"""A real Prometheus for the tests: a process on 127.0.0.1 with a free port, scraping the
services' /metrics every second and evaluating prometheus/rules/driftloop.yml, stopped by pid."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from tools import require_tool

from driftloop.shared.broker import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
RULES_FILE = REPO_ROOT / "prometheus" / "rules" / "driftloop.yml"


def prometheus_binary() -> str:
    """The `prometheus` executable; skips the test without one (fails it under CI=true)."""
    return require_tool("prometheus", "the dashboards and alert rules cannot be checked against a live Prometheus")


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES_FILE.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def rule_expr(alert: str) -> str:
    """The ``expr`` of the alert rule ``alert``, as shipped (threshold included)."""
    for rule in rules():
        if rule.get("alert") == alert:
            return str(rule["expr"])
    raise KeyError(f"no alert rule {alert!r} in {RULES_FILE}")


class QueryError(Exception):
    pass


class Prometheus:
    """A prometheus process on 127.0.0.1 with its storage under ``workdir``; one job per
    target, named after it as in prometheus/prometheus.yml."""

    def __init__(self, binary: str, workdir: Path, targets: dict[str, int]) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES_FILE)],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                for job, port in targets.items()
            ],
        }
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def start(self, timeout_s: float = 30.0) -> Prometheus:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited with {self.proc.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"prometheus not ready after {timeout_s:.0f} s; see {self.log_path}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop our prometheus process by its pid: SIGTERM, then SIGKILL after 15 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> Prometheus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def api(self, path: str, **params: str) -> Any:
        """GET (no params) or POST form to the HTTP API; returns ``data`` or raises with the error."""
        data = urllib.parse.urlencode(params).encode() if params else None
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}", data=data, timeout=10) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
        if body.get("status") != "success":
            raise QueryError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self.api("query", query=expr)["result"])

    def points(self, expr: str, start: float, end: float) -> int:
        result = self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step="1")["result"]
        return sum(len(series["values"]) for series in result)
