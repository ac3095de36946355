"""The Prometheus alert rules (prometheus/rules/driftloop.yml) and their unit tests.

``promtool check rules`` validates the rules file, ``promtool check config`` the compose
Prometheus config that loads it, and ``promtool test rules`` runs the series fixtures in
prometheus/rules/tests/*.yml, which prove each alert fires when it should and stays
silent when it should not. Without promtool those tests are skipped with the reason, and
fail under CI=true (`make test` installs it first: scripts/ensure-tools). The structural
checks below need no promtool: every alert is labelled, annotated, covered by a firing and
a silent case, and wired into prometheus.yml and docker-compose.yml.
"""

from __future__ import annotations

import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from tools import require_tool

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO_ROOT / "prometheus"
RULES_FILE = PROMETHEUS_DIR / "rules" / "driftloop.yml"
RULE_TESTS = sorted((PROMETHEUS_DIR / "rules" / "tests").glob("*.yml"))
CONFIG_FILE = PROMETHEUS_DIR / "prometheus.yml"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"

EXPECTED_ALERTS = {
    "DriftDetected",
    "ServedAccuracyLow",
    "EstimatedAccuracyLow",
    "ServedAccuracyBelowBaseline",
    "DeadLetterRateHigh",
    "ConsumerStalled",
    "ServiceDown",
    "ModelLoadRefused",
    "PoisonBatchSkipped",
}
SEVERITIES = {"critical", "warning", "info"}


def rel(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def load(path: Path) -> Any:
    with path.open() as fh:
        return yaml.safe_load(fh)


def alert_rules() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for group in load(RULES_FILE)["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                assert rule["alert"] not in found, f"{rel(RULES_FILE)}: alert {rule['alert']} defined twice"
                found[rule["alert"]] = rule
    return found


def compose_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Bind-mount source -> container path of a compose service (short or long syntax)."""
    mounts: dict[str, str] = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            mounts[str(volume["source"])] = str(volume["target"])
        else:
            source, target, *_ = str(volume).split(":")
            mounts[source] = target
    return mounts


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_tool("promtool", "the alert rules cannot be checked or unit-tested")


def run(promtool: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *map(str, args)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
    )


# --------------------------------------------------------------------------- promtool


def test_promtool_check_rules(promtool: str) -> None:
    proc = run(promtool, "check", "rules", rel(RULES_FILE))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_check_config(promtool: str) -> None:
    """The compose Prometheus config parses and its rule_files resolve to the rules file."""
    proc = run(promtool, "check", "config", rel(CONFIG_FILE))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert rel(RULES_FILE) in proc.stdout, f"{rel(CONFIG_FILE)} does not load {rel(RULES_FILE)}:\n{proc.stdout}"


@pytest.mark.parametrize("test_file", RULE_TESTS, ids=[p.name for p in RULE_TESTS])
def test_promtool_test_rules(promtool: str, test_file: Path) -> None:
    proc = run(promtool, "test", "rules", rel(test_file))
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- structure


def test_the_expected_alerts_exist() -> None:
    assert set(alert_rules()) == EXPECTED_ALERTS


@pytest.mark.parametrize("name", sorted(EXPECTED_ALERTS))
def test_alert_is_labelled_and_annotated(name: str) -> None:
    rule = alert_rules()[name]
    where = f"{rel(RULES_FILE)}: alert {name}"
    assert (rule.get("labels") or {}).get("severity") in SEVERITIES, f"{where}: severity must be one of {SEVERITIES}"
    annotations = rule.get("annotations") or {}
    for key in ("summary", "description"):
        assert str(annotations.get(key, "")).strip(), f"{where}: no {key} annotation"


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    assert RULE_TESTS, f"no promtool unit tests in {rel(PROMETHEUS_DIR / 'rules' / 'tests')}"
    firing: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TESTS:
        doc = load(path)
        rule_files = [(path.parent / f).resolve() for f in doc.get("rule_files") or []]
        assert rule_files == [RULES_FILE.resolve()], f"{rel(path)}: rule_files must be [{rel(RULES_FILE)}]"
        for case in doc["tests"]:
            for check in case.get("alert_rule_test") or []:
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    assert not EXPECTED_ALERTS - firing, f"alerts never shown to fire: {sorted(EXPECTED_ALERTS - firing)}"
    assert not EXPECTED_ALERTS - silent, f"alerts never shown to stay silent: {sorted(EXPECTED_ALERTS - silent)}"


def test_prometheus_config_loads_the_rules_and_compose_mounts_them() -> None:
    config = load(CONFIG_FILE)
    rule_files = config.get("rule_files") or []
    assert [(CONFIG_FILE.parent / f).resolve() for f in rule_files] == [RULES_FILE.resolve()], (
        f"{rel(CONFIG_FILE)}: rule_files {rule_files} should be just {rel(RULES_FILE.relative_to(PROMETHEUS_DIR))}"
    )
    prometheus = load(COMPOSE_FILE)["services"]["prometheus"]
    mounts = compose_mounts(prometheus)
    config_in_container = PurePosixPath(mounts["./prometheus/prometheus.yml"])
    # Relative rule_files resolve against the config file's directory in the container too.
    assert mounts.get("./prometheus/rules") == str(config_in_container.parent / "rules"), (
        f"{rel(COMPOSE_FILE)}: service prometheus must mount ./prometheus/rules at "
        f"{config_in_container.parent / 'rules'} (next to its prometheus.yml)"
    )
