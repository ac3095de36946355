"""``driftloop topics``: create every topic with its partitions and policies."""

from __future__ import annotations

import argparse
import asyncio

from driftloop.commands._args import Subparsers

NAME = "topics"
LONG_RUNNING = False


def add_parser(subparsers: Subparsers) -> None:
    subparsers.add_parser(NAME, help="create every topic with its partitions and policies")


def run(args: argparse.Namespace) -> int:
    from driftloop.shared.kafka import client_options, create_topics
    from driftloop.shared.settings import CommonSettings
    from driftloop.shared.topics import Topics

    common = CommonSettings()
    specs = Topics(common.topic_prefix, common.partitions).catalogue()
    created = asyncio.run(
        create_topics(common.bootstrap_servers, specs, common.replication_factor, options=client_options(common))
    )
    for spec in specs:
        state = "created" if spec.name in created else "exists"
        print(f"{spec.name:<40} partitions={spec.partitions:<3} {spec.config.get('cleanup.policy', '')}  {state}")
    return 0
