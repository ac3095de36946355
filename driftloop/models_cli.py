"""`driftloop models`: the registry for operators (list, show, promote, rollback, archive).

Every change is a new ModelVersion record on the compacted registry topic, with the reason
and who asked; inference follows the topic and swaps without a restart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

from driftloop.shared.errors import ConfigError, RegistrySignatureInvalid
from driftloop.shared.kafka import client_options, load_registry_records, producer, start_client
from driftloop.shared.registry import Registry, registry_key, with_status
from driftloop.shared.serde import FileSchemaRegistry, Serde
from driftloop.shared.settings import CommonSettings
from driftloop.shared.signing import sign
from driftloop.shared.topics import MODELS_REGISTRY, Topics


def _ts(ms: int | None) -> str:
    return "-" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in rows])


def score(record: dict[str, Any]) -> tuple[str, str]:
    """(its prequential figure, the difference to the champion's when the evaluation gate
    judged it): a classifier's accuracy (higher is better), a regressor's MAE (lower is better)."""
    m = record["metrics"]
    if "prequential_mae" in m:
        value, champ = m["prequential_mae"], m.get("champion_mae")
        return f"mae {value:.4g}", "-" if champ is None else f"{value - champ:+.4g}"
    value, champ = m.get("prequential_accuracy"), m.get("champion_accuracy")
    if value is None:
        return "-", "-"
    return f"acc {value:.3f}", "-" if champ is None else f"{value - champ:+.3f}"


def family(record: dict[str, Any]) -> str:
    """The model family a version was trained as (its ``params["spec"]``: ``arf``, ``linreg``...)."""
    return record["params"].get("spec") or "-"


def list_rows(registry: Registry, name: str) -> list[list[str]]:
    rows = []
    for r in registry.versions(name):
        figure, vs = score(r)
        rows.append(
            [
                str(r["version"]),
                r["status"],
                r["trigger"],
                "-" if r["parent_version"] is None else str(r["parent_version"]),
                str(r["training_window"]["examples"]),
                figure,
                vs,
                r.get("task") or "-",
                family(r),
                _ts(r["created_at"]),
                r["status_reason"][:60],
            ]
        )
    return rows


def _version(registry: Registry, name: str, version: int) -> dict[str, Any]:
    record = registry.get(name, version)
    if record is None:
        raise ConfigError(f"model {name} has no version {version}")
    return record


def promote(registry: Registry, name: str, version: int, reason: str, now_ms: int) -> list[dict[str, Any]]:
    """The records that make ``version`` the champion and archive the current one."""
    target = _version(registry, name, version)
    if target["status"] == "rejected":
        raise ConfigError(f"{name} v{version} was rejected; it cannot be promoted")
    current = registry.champion(name)
    if current is not None and current["version"] == version:
        raise ConfigError(f"{name} v{version} is already the champion")
    out = [with_status(target, "champion", reason, now_ms)]
    if current is not None:
        out.append(with_status(current, "archived", f"replaced by v{version}: {reason}", now_ms))
    return out


def rollback(registry: Registry, name: str, reason: str, now_ms: int) -> list[dict[str, Any]]:
    """Back to the current champion's parent (the version it replaced in the lineage)."""
    current = registry.champion(name)
    if current is None:
        raise ConfigError(f"model {name} has no champion to roll back")
    parent = registry.get(name, current["parent_version"]) if current["parent_version"] is not None else None
    if parent is None:
        raise ConfigError(f"{name} v{current['version']} has no parent version to roll back to")
    return [
        with_status(parent, "champion", f"rollback from v{current['version']}: {reason}", now_ms),
        with_status(current, "rejected", f"rolled back: {reason}", now_ms),
    ]


def archive(registry: Registry, name: str, version: int, reason: str, now_ms: int) -> list[dict[str, Any]]:
    target = _version(registry, name, version)
    if target["status"] == "champion":
        raise ConfigError(f"{name} v{version} is the champion: promote another version first")
    return [with_status(target, "archived", reason, now_ms)]


async def _load(common: CommonSettings, serde: Serde, topic: str) -> Registry:
    registry = Registry(common.hmac_key)
    for rec in await load_registry_records(common.bootstrap_servers, topic, options=client_options(common)):
        try:
            registry.apply(serde.decode(MODELS_REGISTRY, rec.value))
        except RegistrySignatureInvalid as exc:
            print(f"driftloop models: ignored record at offset {rec.offset}: {exc}", file=sys.stderr)
    return registry


async def _publish(common: CommonSettings, serde: Serde, topic: str, records: list[dict[str, Any]]) -> None:
    prod = producer(common.bootstrap_servers, options=client_options(common))
    key = common.hmac_key
    await start_client(prod, common.bootstrap_servers)
    try:
        for r in records:
            r = sign(r, key) if key is not None else r
            await prod.send_and_wait(
                topic, key=registry_key(r["name"], r["version"]), value=serde.encode(MODELS_REGISTRY, r)
            )
    finally:
        await prod.stop()


def models_cli(args: argparse.Namespace) -> int:
    common = CommonSettings()
    serde = Serde(FileSchemaRegistry(common.schema_dir))
    topic = Topics(common.topic_prefix, common.partitions).name("models.registry")
    name = args.model or common.model_name
    registry = asyncio.run(_load(common, serde, topic))
    now = int(time.time() * 1000)
    reason = f"{args.models_command} by operator" + (f": {args.reason}" if getattr(args, "reason", None) else "")
    if args.models_command == "list":
        rows = list_rows(registry, name)
        if not rows:
            print(f"model {name}: no versions registered")
            return 0
        print(
            table(
                rows,
                [
                    "version",
                    "status",
                    "trigger",
                    "parent",
                    "examples",
                    "score",
                    "vs champion",
                    "task",
                    "family",
                    "created (UTC)",
                    "reason",
                ],
            )
        )
        return 0
    if args.models_command == "show":
        print(json.dumps(_version(registry, name, args.version), indent=2, sort_keys=True))
        return 0
    if args.models_command == "promote":
        records = promote(registry, name, args.version, reason, now)
    elif args.models_command == "rollback":
        records = rollback(registry, name, reason, now)
    else:
        records = archive(registry, name, args.version, reason, now)
    asyncio.run(_publish(common, serde, topic, records))
    for r in records:
        print(f"{r['name']} v{r['version']}: {r['status']} ({r['status_reason']})")
    return 0
