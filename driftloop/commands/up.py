"""``driftloop up``: the broker (unless one is configured), the topics and all five services,
supervised (``driftloop/runner.py``)."""

from __future__ import annotations

import argparse

from driftloop.commands._args import Subparsers, engine_option

NAME = "up"
LONG_RUNNING = True


def add_parser(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(NAME, help="broker (unless KAFKA_BOOTSTRAP_SERVERS is set) + topics + all five services")
    engine_option(p)


def run(args: argparse.Namespace) -> int:
    from driftloop.runner import up

    return up()
