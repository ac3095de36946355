"""The one import name (issue 14): how the checkout's folders map to ``driftloop.…``.

pyproject.toml lists the packages explicitly (setuptools' package discovery cannot rename
folders), so these tests catch a package folder that was added but not listed, a tool that
landed among the services, and an import of the bare folder names that only works from a
checkout.
"""

from __future__ import annotations

import ast
import importlib.util
import tomllib
from pathlib import Path

from driftloop.shared.resources import KAFKA_POM, SCHEMA_DIR

REPO_ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
SERVICES = {"ingestion", "features", "inference", "monitoring", "retraining"}
SKIP = {".venv", "build", "dist", "__pycache__", ".git", "node_modules"}


def _setuptools() -> dict:
    return PYPROJECT["tool"]["setuptools"]


def _folder_of(package: str) -> Path:
    """The checkout folder of an import name, by the longest package-dir prefix."""
    dirs: dict[str, str] = _setuptools()["package-dir"]
    parts = package.split(".")
    for i in range(len(parts), 0, -1):
        head = ".".join(parts[:i])
        if head in dirs:
            return REPO_ROOT / dirs[head] / Path(*parts[i:])
    return REPO_ROOT / Path(*parts)


def _python_files() -> list[Path]:
    out = []
    for path in REPO_ROOT.rglob("*.py"):
        rel = path.relative_to(REPO_ROOT)
        if not SKIP & set(rel.parts) and not any(p.startswith(".") for p in rel.parts[:-1]):
            out.append(path)
    return out


def test_every_listed_package_is_a_folder_of_the_checkout() -> None:
    for package in _setuptools()["packages"]:
        assert package.split(".")[0] == "driftloop", f"{package}: everything installs under driftloop."
        assert (_folder_of(package) / "__init__.py").is_file(), f"{package} -> {_folder_of(package)} has no __init__.py"


def test_every_package_folder_is_listed() -> None:
    dirs: dict[str, str] = _setuptools()["package-dir"]
    listed = set(_setuptools()["packages"])
    for name, folder in dirs.items():
        for init in (REPO_ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO_ROOT / folder)
            if SKIP & set(rel.parts):
                continue
            package = ".".join([name, *rel.parts])
            # A folder mapped to its own name (driftloop.shared inside driftloop/) is listed under it.
            owner = _folder_of(package)
            assert owner == init.parent, f"{init.parent} would install as {package}, which maps to {owner}"
            where = init.parent.relative_to(REPO_ROOT)
            assert package in listed, f"{where} is a package but pyproject.toml lists no {package}"


def test_services_holds_exactly_the_five_services() -> None:
    entries = {p.name for p in (REPO_ROOT / "services").iterdir() if p.name != "__pycache__"}
    assert entries == SERVICES | {"__init__.py"}, (
        f"services/ holds {sorted(entries - SERVICES - {'__init__.py'})} beside the five services: "
        "tools belong in driftloop/"
    )


def test_no_import_of_the_bare_folder_names() -> None:
    bare = {"shared", "services", "schemas"}
    found = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            found += [f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {n}" for n in names if n.split(".")[0] in bare]
    assert not found, "import driftloop.shared / driftloop.services instead:\n" + "\n".join(found)


def test_the_run_time_files_are_package_data() -> None:
    assert (SCHEMA_DIR / "registry.json").is_file()
    assert KAFKA_POM.is_file()
    data = _setuptools()["package-data"]
    assert "*.avsc" in data["driftloop.schemas"] and "registry.json" in data["driftloop.schemas"]
    assert "jars/pom.xml" in data["driftloop.shared"]


def test_the_development_install_resolves_to_the_checkout() -> None:
    """`make install` (pip install -e .) maps driftloop.shared to shared/ through setuptools'
    editable finder; a stale install of another checkout would be imported instead."""
    for module, path in (
        ("driftloop", "driftloop/__init__.py"),
        ("driftloop.shared.settings", "shared/settings.py"),
        ("driftloop.services.features.app", "services/features/app.py"),
    ):
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin is not None, module
        assert Path(spec.origin).resolve() == (REPO_ROOT / path).resolve(), f"{module} is {spec.origin}"
