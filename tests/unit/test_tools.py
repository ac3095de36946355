"""A missing tool skips its tests on a plain local run and fails them under CI=true, both in
the tests' shared helper (tests/tools.py) and in the script `make test` runs first
(scripts/ensure-tools)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from tools import require_tool

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "ensure-tools"
NO_SUCH_TOOL = "driftloop-no-such-tool"


def test_a_missing_tool_skips_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=f"`{NO_SUCH_TOOL}` is not on PATH, so nothing works"):
        require_tool(NO_SUCH_TOOL, "nothing works")


def test_a_missing_tool_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=f"CI=true: `{NO_SUCH_TOOL}` is not on PATH"):
        require_tool(NO_SUCH_TOOL, "nothing works")


def test_a_present_tool_is_returned_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    assert Path(require_tool("sh", "no shell")).name == "sh"


def run_script(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The script with an empty PATH: no tool is found and apt-get is not there to install one."""
    return subprocess.run(
        ["/bin/bash", str(SCRIPT)],
        env={"PATH": str(tmp_path), "HOME": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_ensure_tools_says_why_and_exits_0_locally(tmp_path: Path) -> None:
    proc = run_script(tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("ensure-tools: missing prometheus promtool openssl kcat curl: cannot install them here")
    assert "will be skipped" in lines[0]


def test_ensure_tools_fails_under_ci(tmp_path: Path) -> None:
    proc = run_script(tmp_path, CI="true")
    assert proc.returncode == 1, proc.stderr
    assert "CI=true, so this fails the run" in proc.stderr
