"""The dashboards and alert rules against a real Prometheus scraping the five services.

The five services run as processes on the session broker; a real ``prometheus`` scrapes
them every second with a generated config (one job per service, named after it, as in
prometheus/prometheus.yml) and loads prometheus/rules/driftloop.yml. A short drifting SEA
stream and a few undecodable records are replayed, and once outcomes flow every query
the dashboards and the rules make must return series:

* every panel target and template-variable query of grafana/dashboards/*.json, with the
  Grafana variables substituted (``$__rate_interval`` by ``RATE_INTERVAL``, a custom
  variable by all its values, a query variable by its "All" regex);
* the drift annotation queries, as range queries over the run: they must mark at least
  one moment (the SEA stream drifts twice);
* every alert rule ``expr``. A rule normally returns nothing on a healthy stack (that is
  the point of its threshold), so a trailing threshold comparison (``X > 0.05``) is
  removed and ``X`` must return series: the metrics behind the alert exist with the
  labels the rule matches on. Comparisons inside an expression are filters that a
  healthy stack passes (see the header of the rules file). Prometheus must also report
  every rule as evaluated without error;
* every metric name any of those expressions reads (tests/promql.py), queried alone: an
  expression can return series while one of its metrics is misspelt or never exported
  (`A or 0 * B` is B's series when A does not exist), so each metric must have series of
  its own. A counter that only moves on a failure is exported at 0 from the start by its
  service, so it has series on a healthy stack too.

All the empty queries, query errors and rule errors are reported together in one
assertion message, with the metric names involved.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from live_prometheus import Prometheus, QueryError, prometheus_binary, rules
from promql import metric_names

from driftloop.replay import replay
from driftloop.runner import Stack
from driftloop.shared.kafka import producer
from driftloop.shared.serde import Serde
from driftloop.shared.settings import SERVICES
from driftloop.shared.topics import EVENTS_RAW, Topics
from driftloop.streams import sea_stream

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_DIR = REPO_ROOT / "grafana" / "dashboards"
DASHBOARDS = ("loop-overview", "service-health", "feature-drift")
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}  # grafana/provisioning/datasources/prometheus.yml

# What Grafana's $__rate_interval would be for a 1 s scrape interval (a few scrapes).
RATE_INTERVAL = "10s"
BUILTIN_VARIABLES = {"__rate_interval": RATE_INTERVAL, "__interval": RATE_INTERVAL, "__range": "1m"}
EVENTS = 3000
RATE = 300.0
LABEL_DELAY = 50
OUTCOMES_READY = "sum(driftloop_outcomes_total) > 2000"
JUNK = [b"\x13\x37 neither avro nor json", b"{not json", b"\x00\x00\x00\x03\xe7\x02", b"[]", b"\xff"]

# A threshold comparison at the very end of an expression: `> 0.05`, `== 0`, `< bool -1e-3`.
TRAILING_THRESHOLD = re.compile(
    r"\s*(?:==|!=|>=|<=|>|<)\s*(?:bool\s+)?[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?\s*$"
)
VARIABLE = re.compile(r"\$\{(\w+)(?::[\w]+)?\}|\[\[(\w+)\]\]|\$(\w+)")
LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(.+?)\s*,\s*)?(\w+)\s*\)\s*$", re.S)


@dataclass(frozen=True)
class Check:
    source: str  # where the expression comes from, for the report
    expr: str  # ready to send to Prometheus
    kind: str = "instant"  # "range": at least one point over the run; "metric": one metric name alone

    def metrics(self) -> list[str]:
        return sorted(metric_names(self.expr))


# --------------------------------------------------------------------------- dashboards


def load_dashboard(name: str) -> dict[str, Any]:
    return json.loads((DASHBOARD_DIR / f"{name}.json").read_text())


def all_panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Panels, including those inside (collapsed) rows."""
    out: list[dict[str, Any]] = []
    for panel in panels:
        out.append(panel)
        out.extend(all_panels(panel.get("panels") or []))
    return out


def variable_query(var: dict[str, Any]) -> str:
    query = var.get("query")
    return str(query.get("query", "")) if isinstance(query, dict) else str(query or "")


def variable_values(dashboard: dict[str, Any]) -> dict[str, str]:
    """What each template variable becomes when "All" is selected, as a regex."""
    values = dict(BUILTIN_VARIABLES)
    for var in dashboard.get("templating", {}).get("list", []):
        name = var["name"]
        if var.get("allValue"):
            values[name] = var["allValue"]
        elif var["type"] == "custom":
            options = [o.strip() for o in variable_query(var).split(",") if o.strip()]
            values[name] = "(" + "|".join(re.escape(o) for o in options) + ")"
        else:
            values[name] = ".+"
    return values


def substitute(expr: str, values: dict[str, str], where: str) -> str:
    def one(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        if name not in values:
            raise AssertionError(f"{where}: unknown template variable ${name} in {expr!r}")
        return values[name]

    return VARIABLE.sub(one, expr)


def dashboard_checks() -> list[Check]:
    checks: list[Check] = []
    for name in DASHBOARDS:
        board = load_dashboard(name)
        values = variable_values(board)
        for var in board.get("templating", {}).get("list", []):
            if var["type"] != "query":
                continue
            match = LABEL_VALUES.match(variable_query(var))
            assert match, f"{name}.json: variable {var['name']}: only label_values(metric, label) is checked"
            selector, label = match.groups()
            selector = substitute(selector, values, name) if selector else f'{{{label}=~".+"}}'
            expr = f"count by ({label}) ({selector})"
            checks.append(Check(f"{name}.json variable ${var['name']}", expr))
        for panel in all_panels(board["panels"]):
            for target in panel.get("targets") or []:
                where = f"{name}.json panel {panel['title']!r} target {target['refId']}"
                checks.append(Check(where, substitute(target["expr"], values, where)))
        for ann in board.get("annotations", {}).get("list", []):
            if ann.get("expr"):
                where = f"{name}.json annotation {ann['name']!r}"
                checks.append(Check(where, substitute(ann["expr"], values, where), kind="range"))
    return checks


# --------------------------------------------------------------------------- rules


def without_threshold(expr: str) -> str:
    return TRAILING_THRESHOLD.sub("", expr.strip(), count=1)


def rule_checks() -> list[Check]:
    return [
        Check(
            f"rule {rule.get('alert') or rule.get('record')} (trailing threshold removed)",
            without_threshold(rule["expr"]),
        )
        for rule in rules()
    ]


def metric_checks(checks: list[Check]) -> list[Check]:
    """Every metric name the checks read, queried alone: an `or 0 * other` fallback or an
    `unless` must not hide a metric that is misspelt or never exported."""
    readers: dict[str, list[str]] = {}
    for check in checks:
        for name in check.metrics():
            readers.setdefault(name, []).append(check.source)
    return [
        Check(f"metric {name} (read by {'; '.join(sources)})", name, kind="metric")
        for name, sources in sorted(readers.items())
    ]


def test_every_rule_and_panel_reads_a_metric() -> None:
    """Each expression names at least one metric, so that the per-metric checks cover it."""
    for check in dashboard_checks() + rule_checks():
        assert check.metrics(), f"{check.source}: no metric name found in {check.expr!r}"


def test_trailing_threshold_removal() -> None:
    assert without_threshold("sum(x) / sum(y)\n> 0.05\n") == "sum(x) / sum(y)"
    assert without_threshold("up == 0") == "up"
    assert without_threshold("(a - b) < bool -1e-3") == "(a - b)"
    assert without_threshold("(a == bool 0) * b") == "(a == bool 0) * b"
    assert without_threshold("rate(x[5m])") == "rate(x[5m])"


def test_dashboards_are_provisionable() -> None:
    """Static checks: the queries are collected, no variables are left, every data source
    reference is the provisioned Prometheus (no ${DS_...} import placeholders)."""
    for name in DASHBOARDS:
        text = (DASHBOARD_DIR / f"{name}.json").read_text()
        board = json.loads(text)
        assert "${DS_" not in text and "__inputs" not in board, f"{name}.json: uses an import-time data source input"
        ids = [p["id"] for p in all_panels(board["panels"])]
        assert len(ids) == len(set(ids)), f"{name}.json: duplicate panel ids"
        for panel in all_panels(board["panels"]):
            if panel["type"] == "row":
                continue
            assert panel.get("datasource") == DATASOURCE, f"{name}.json: panel {panel['title']!r} data source"
            assert panel.get("targets"), f"{name}.json: panel {panel['title']!r} has no query"
            for target in panel["targets"]:
                assert target.get("datasource", DATASOURCE) == DATASOURCE and target.get("expr"), (
                    f"{name}.json: panel {panel['title']!r} target {target.get('refId')}"
                )
    uids = [load_dashboard(n)["uid"] for n in DASHBOARDS]
    assert len(set(uids)) == len(uids)
    for check in dashboard_checks():
        assert "$" not in check.expr and "[[" not in check.expr, f"{check.source}: {check.expr}"


# --------------------------------------------------------------------------- Prometheus


def wait_for(prom: Prometheus, expr: str, deadline: float, stack: Stack) -> bool:
    """Poll until ``expr`` returns series (True) or the deadline passes (False)."""
    while not prom.query(expr):
        stack.check()
        if time.monotonic() > deadline:
            return False
        time.sleep(1.0)
    return True


def evaluate(prom: Prometheus, checks: list[Check], run_start: float) -> list[str]:
    """One line per check that came back empty or failed."""
    problems = []
    for check in checks:
        try:
            if check.kind == "range":
                empty = prom.points(check.expr, run_start, time.time()) == 0
            else:
                empty = not prom.query(check.expr)
        except QueryError as exc:
            problems.append(f"- {check.source}: query error {exc}\n    {' '.join(check.expr.split())}")
            continue
        if empty:
            if check.kind == "metric":
                problems.append(f"- {check.source}: no series")
                continue
            what = "no point over the run" if check.kind == "range" else "empty"
            problems.append(
                f"- {check.source}: {what}; metrics {', '.join(check.metrics())}\n    {' '.join(check.expr.split())}"
            )
    return problems


def rule_problems(prom: Prometheus) -> list[str]:
    loaded = {r["name"]: r for g in prom.api("rules")["groups"] for r in g["rules"]}
    problems = []
    for rule in rules():
        name = rule.get("alert") or rule.get("record")
        got = loaded.get(name)
        if got is None:
            problems.append(f"- rule {name}: not loaded by Prometheus")
        elif got.get("health") != "ok":
            problems.append(f"- rule {name}: health {got.get('health')}: {got.get('lastError')}")
    return problems


async def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    prod = producer(bootstrap)
    await prod.start()
    try:
        for value in values:
            await prod.send(topic, key=b"junk", value=value)
        await prod.flush()
    finally:
        await prod.stop()


def test_dashboards_and_alert_rules_query_live_metrics(
    service_env: dict[str, str], topics: Topics, serde: Serde, tmp_path: Path
) -> None:
    binary = prometheus_binary()
    queries = dashboard_checks() + rule_checks()
    checks = metric_checks(queries) + queries
    bootstrap = service_env["KAFKA_BOOTSTRAP_SERVERS"]
    ports = {s: int(service_env[f"DRIFTLOOP_{s.upper()}_METRICS_PORT"]) for s in SERVICES}
    workdir = tmp_path / "prometheus"
    workdir.mkdir()
    prom = Prometheus(binary, workdir, ports)
    started = time.monotonic()
    try:
        prom.start()
        with Stack(env=service_env, log_dir=tmp_path / "logs", services=SERVICES) as stack:
            # Every job is scraped: the generated scrape config reaches every service.
            all_up = f"count(up == 1) == {len(SERVICES)}"
            assert wait_for(prom, all_up, started + 30, stack), f"not every service is scraped: {all_up}"
            run_start = time.time()
            asyncio.run(produce(bootstrap, topics.name(EVENTS_RAW), JUNK))
            asyncio.run(
                replay(
                    bootstrap,
                    topics,
                    serde,
                    sea_stream(EVENTS),
                    run_id=uuid.uuid4().hex[:8],
                    label_delay=LABEL_DELAY,
                    rate=RATE,
                )
            )
            flowed = wait_for(prom, OUTCOMES_READY, time.monotonic() + 40, stack)
            # Gauges refresh every few hundred records and scrapes lag a second: retry the
            # empty ones for a while before reporting them (all of them, flow or no flow).
            settle = time.monotonic() + (15 if flowed else 0)
            while True:
                problems = evaluate(prom, checks, run_start) + rule_problems(prom)
                if not flowed:
                    problems.insert(0, f"- the stream did not flow through: {OUTCOMES_READY} stayed empty for 40 s")
                if not problems or time.monotonic() > settle:
                    break
                stack.check()
                time.sleep(2.0)
            stack.check()
    finally:
        prom.stop()
    assert not problems, (
        f"{len(problems)} of {len(checks)} dashboard/alert-rule queries (and rule evaluations) failed against the "
        f"live services after {time.monotonic() - started:.0f} s (service logs: {tmp_path / 'logs'}, "
        f"Prometheus log: {prom.log_path}):\n" + "\n".join(problems)
    )
