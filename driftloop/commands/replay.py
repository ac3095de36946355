"""``driftloop replay CSV``: a CSV as events plus delayed labels (``driftloop/replay.py``)."""

from __future__ import annotations

import argparse

from driftloop.commands._args import Subparsers, existing_csv, non_negative_int, positive_float, positive_int

NAME = "replay"
LONG_RUNNING = False


def add_parser(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(NAME, help="replay a CSV as events plus delayed labels")
    p.add_argument("csv", type=existing_csv, metavar="CSV")
    p.add_argument("--target", required=True, metavar="COL", help="the label column")
    p.add_argument("--entity", default=None, metavar="COL", help="the entity column (default: one entity per row)")
    p.add_argument(
        "--rate",
        type=positive_float,
        default=None,
        metavar="N",
        help="events per second (default: as fast as possible)",
    )
    p.add_argument(
        "--label-delay", type=non_negative_int, default=50, metavar="N", help="send each label N events later"
    )
    p.add_argument("--limit", type=positive_int, default=None, metavar="N", help="at most N rows")


def run(args: argparse.Namespace) -> int:
    from driftloop.replay import replay_cli

    return replay_cli(args)
