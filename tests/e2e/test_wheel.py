"""The wheel as a new user gets it: built from the checkout, installed into a fresh venv
outside the checkout, and running the demo from another folder (issue 14).

It proves three things no other test does: everything installs under the one import name
``driftloop`` (no top-level ``shared`` or ``services`` in site-packages), the files read at
run time (the schemas, the Kafka pom) ship inside the wheel as package data, and the demo's
five service processes start from the installed package alone.

The venv is clean (no system site-packages); its dependencies come from the package index
through pip's cache. The demo starts its own broker: Apache Kafka (from the jars the
*installed* pom names, cached under ~/.cache/driftloop) or Tansu with
``DRIFTLOOP_TEST_ENGINE=tansu``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from driftloop.shared.broker import choose_engine, free_port

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
ENGINE = os.environ.get("DRIFTLOOP_TEST_ENGINE", "kafka")
EVENTS = 600


def _run(
    cmd: list[str], *, timeout: float, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd, env=env)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", str(REPO_ROOT), "--no-deps", "-q", "-w", str(out)], timeout=600)
    (found,) = out.glob("driftloop-*.whl")
    return found


def test_wheel_holds_one_import_name_and_its_package_data(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith((".dist-info", ".data"))}
    assert top == {"driftloop"}, f"the wheel installs top-level {sorted(top)}"
    for needed in (
        "driftloop/__main__.py",
        "driftloop/commands/demo.py",
        "driftloop/shared/settings.py",
        "driftloop/shared/runtime/runner.py",
        "driftloop/services/features/app.py",
        "driftloop/schemas/registry.json",
        "driftloop/schemas/RawEvent.avsc",
        "driftloop/shared/jars/pom.xml",
    ):
        assert needed in names, f"{needed} is not in {wheel.name}"
    registry = json.loads((REPO_ROOT / "schemas" / "registry.json").read_text())
    missing = [e["file"] for e in registry["schemas"] if f"driftloop/schemas/{e['file']}" not in names]
    assert not missing, f"schemas named by registry.json but not in the wheel: {missing}"
    assert not any(n.startswith(("driftloop/tests/", "tests/")) for n in names), "the tests are not installed"


def test_installed_wheel_runs_the_demo_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    if ENGINE not in ("kafka", "tansu"):
        pytest.fail(f"DRIFTLOOP_TEST_ENGINE={ENGINE!r}: expected kafka or tansu")
    if ENGINE == "kafka" and (why := choose_engine("auto").reason):
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs Apache Kafka for the e2e tier: {why}")
        pytest.skip(f"Apache Kafka is not available here: {why}")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)], timeout=900)

    site = Path(
        _run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            timeout=60,
        ).stdout.strip()
    )
    assert (site / "driftloop" / "shared" / "jars" / "pom.xml").is_file()
    assert (site / "driftloop" / "schemas" / "registry.json").is_file()
    for generic in ("shared", "services", "schemas", "tests"):
        assert not (site / generic).exists(), f"the wheel installed a top-level {generic!r} in site-packages"
        assert not (site / f"{generic}.py").exists(), f"the wheel installed a top-level {generic}.py in site-packages"

    # From a folder with no checkout in sight, with no PYTHONPATH and no external Kafka:
    # the demo starts its own broker, the topics and the five services from the wheel.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRIFTLOOP_", "KAFKA_", "PYTHON"))}
    env |= {"DRIFTLOOP_BROKER_PORT": str(free_port()), "DRIFTLOOP_BROKER_ENGINE": ENGINE}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    proc = _run(
        [str(venv / "bin" / "driftloop"), "demo", "--events", str(EVENTS), "--out", "demo", "--timeout", "300"],
        timeout=480,
        cwd=elsewhere,
        env=env,
    )
    summary = json.loads((elsewhere / "demo" / "summary.json").read_text())
    assert summary["events_sent"] == EVENTS, summary
    assert summary["events_without_prediction"] == 0, summary
    assert (elsewhere / "demo" / "report.md").is_file(), proc.stdout[-2000:]
