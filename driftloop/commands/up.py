"""``driftloop up``: the broker (unless one is configured), the topics and all five services,
supervised (``driftloop/runner.py``)."""

from __future__ import annotations

import argparse

from driftloop.commands._args import Subparsers, engine_option

NAME = "up"
LONG_RUNNING = True


def _replicas(text: str) -> dict[str, int]:
    from driftloop.runner import parse_replicas
    from driftloop.shared.errors import ConfigError

    try:
        return parse_replicas(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--replicas").strip(": ")) from None


def add_parser(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(NAME, help="broker (unless KAFKA_BOOTSTRAP_SERVERS is set) + topics + all five services")
    engine_option(p)
    p.add_argument(
        "--replicas",
        type=_replicas,
        default={},
        metavar="SERVICE=N,...",
        help="instances per service in its consumer group, e.g. features=2,inference=2 "
        "(scalable: ingestion, features, inference)",
    )


def run(args: argparse.Namespace) -> int:
    from driftloop.runner import up

    return up(replicas=args.replicas)
