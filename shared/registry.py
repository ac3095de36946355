"""The model registry's state, rebuilt from ModelVersion records, and the artifact store.

Pure: no Kafka here. A service feeds ``Registry.apply`` with the records it reads from
the compacted models.registry topic (oldest first); the latest record per name:version wins.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from driftloop.shared.errors import (
    ArtifactError,
    ArtifactIntegrityError,
    ArtifactOutsideStore,
    ConfigError,
    RegistrySignatureInvalid,
)
from driftloop.shared.signing import SIGNATURE_FIELD, verify

STATUSES = ("candidate", "champion", "archived", "rejected")


def registry_key(name: str, version: int) -> bytes:
    return f"{name}:{version}".encode()


@dataclass(frozen=True)
class ChampionChange:
    name: str
    old: int | None
    new: int


class Registry:
    """Every known version of every model, and which one is champion.

    With an ``hmac_key``, a record that is unsigned or wrongly signed is refused
    (RegistrySignatureInvalid) before it changes anything: a forged record on the topic
    can never become champion.
    """

    def __init__(self, hmac_key: bytes | str | None = None) -> None:
        self.hmac_key = hmac_key
        self._versions: dict[tuple[str, int], dict[str, Any]] = {}
        self._champion: dict[str, int] = {}
        self.records_applied = 0

    def apply(self, record: dict[str, Any]) -> ChampionChange | None:
        """Take one ModelVersion record; return the champion change it causes, if any."""
        name, version = record["name"], int(record["version"])
        if self.hmac_key is not None and not verify(record, self.hmac_key):
            what = "carries no signature" if not record.get(SIGNATURE_FIELD) else "has a signature that does not match"
            raise RegistrySignatureInvalid(f"{name} v{version} ({record.get('status')}) {what}; refused")
        self._versions[(name, version)] = record
        self.records_applied += 1
        old = self._champion.get(name)
        if record["status"] == "champion":
            self._champion[name] = version
        elif old == version:
            # The champion lost its status: fall back to the newest other champion record.
            del self._champion[name]
            rest = [v for (n, v), r in self._versions.items() if n == name and r["status"] == "champion"]
            if rest:
                self._champion[name] = max(rest)
        new = self._champion.get(name)
        if new is not None and new != old:
            return ChampionChange(name, old, new)
        return None

    def champion(self, name: str) -> dict[str, Any] | None:
        v = self._champion.get(name)
        return None if v is None else self._versions[(name, v)]

    def get(self, name: str, version: int) -> dict[str, Any] | None:
        return self._versions.get((name, version))

    def versions(self, name: str) -> list[dict[str, Any]]:
        return [r for (n, _), r in sorted(self._versions.items()) if n == name]

    def first_trained(self, name: str) -> dict[str, Any] | None:
        """The lowest version that learned from data: the static baseline the loop is judged against."""
        trained = [r for r in self.versions(name) if r["params"].get("trained") == "true"]
        return trained[0] if trained else None

    def latest_version(self, name: str) -> int:
        return max((v for (n, v) in self._versions if n == name), default=0)

    def __len__(self) -> int:
        return len(self._versions)


class ArtifactStore:
    """Pickled River pipelines under one root, addressed by ``file://`` URIs.

    Writes are atomic (temp file + rename); loads check the sha256 first and refuse any
    path outside the root, so a registry record cannot make a service unpickle an
    arbitrary file.
    """

    def __init__(self, uri: str) -> None:
        parsed = urlparse(uri)
        if parsed.scheme != "file":
            raise ConfigError(f"artifact store {uri!r}: only file:// URIs are supported")
        # file://./artifacts (relative) and file:///data/artifacts (absolute) both work.
        self.root = Path(unquote(parsed.netloc + parsed.path)).resolve()

    def save(self, name: str, version: int, obj: object) -> tuple[str, str]:
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        path = self.root / name / f"v{version}.pkl"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path.as_uri(), hashlib.sha256(data).hexdigest()

    def load(self, uri: str, sha256: str) -> Any:
        path = self._path(uri)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ArtifactError(f"cannot read artifact {uri}: {exc.strerror}") from exc
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            raise ArtifactIntegrityError(f"artifact {uri} has sha256 {digest[:12]}…, its record says {sha256[:12]}…")
        return pickle.loads(data)  # sha256-checked, inside the store only

    def _path(self, uri: str) -> Path:
        parsed = urlparse(uri)
        if parsed.scheme != "file":
            raise ArtifactOutsideStore(f"artifact {uri} is not a file:// URI")
        path = Path(unquote(parsed.path)).resolve()
        if not path.is_relative_to(self.root):
            raise ArtifactOutsideStore(f"artifact {uri} is outside the artifact store {self.root}")
        return path


def version_record(
    *,
    name: str,
    version: int,
    status: str,
    reason: str,
    artifact: tuple[str, str],
    parent: int | None,
    trigger: str,
    window: dict[str, Any],
    params: dict[str, str],
    metrics: dict[str, float],
    feature_set_version: str,
    code_version: str,
    now_ms: int,
    task: str | None = None,
) -> dict[str, Any]:
    """A new version's record; ``task`` is what the model predicts (binary, multiclass,
    regression), None for a model that learned nothing."""
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}")
    return {
        "name": name,
        "version": version,
        "status": status,
        "status_reason": reason,
        "artifact_uri": artifact[0],
        "artifact_sha256": artifact[1],
        "parent_version": parent,
        "trigger": trigger,
        "training_window": {
            "examples": int(window.get("examples", 0)),
            "start_time": window.get("start_time"),
            "end_time": window.get("end_time"),
            "first_event_id": window.get("first_event_id"),
            "last_event_id": window.get("last_event_id"),
        },
        "params": params,
        "metrics": metrics,
        "feature_set_version": feature_set_version,
        "code_version": code_version,
        "created_at": now_ms,
        "updated_at": now_ms,
        "status_history": [],
        SIGNATURE_FIELD: None,
        "task": task,
    }


def with_status(record: dict[str, Any], status: str, reason: str, now_ms: int) -> dict[str, Any]:
    """The record with a new status; the one it had moves to ``status_history``."""
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}")
    was = {"status": record["status"], "reason": record["status_reason"], "at": record["updated_at"]}
    history = [*record.get("status_history", []), was]
    # The old signature no longer covers the record; the publisher signs the new one.
    return {
        **record,
        "status": status,
        "status_reason": reason,
        "updated_at": now_ms,
        "status_history": history,
        SIGNATURE_FIELD: None,
    }
