"""External tools some tests need (prometheus, promtool, openssl, kcat), shared by all of them.

A plain local run without a tool skips those tests with the reason. Under CI (``CI=true``)
a missing tool fails them instead: a green CI run must never hide the checks that need it
(``make test`` installs the tools first: scripts/ensure-tools).
"""

from __future__ import annotations

import os
import shutil

import pytest

INSTALL_HINT = "scripts/ensure-tools installs it from Debian's packages when run as root"


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def missing(tool: str, why: str) -> str:
    """The message for a missing ``tool``: what cannot be checked without it, and how to get it."""
    return f"`{tool}` is not on PATH, so {why} ({INSTALL_HINT})"


def require_tool(tool: str, why: str) -> str:
    """The path of ``tool``; without it, skip (locally) or fail (``CI=true``) the calling test."""
    path = shutil.which(tool)
    if path is not None:
        return path
    message = missing(tool, why)
    if in_ci():
        pytest.fail(f"CI=true: {message}", pytrace=False)
    pytest.skip(message)
