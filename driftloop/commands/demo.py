"""``driftloop demo``: the whole loop on a stream, and a report (``driftloop/demo.py``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from driftloop.commands._args import Subparsers, engine_option, non_negative_int, positive_float, positive_int

NAME = "demo"
LONG_RUNNING = False


def add_parser(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(NAME, help="run the whole loop on a stream and write a report")
    engine_option(p)
    p.add_argument(
        "--dataset",
        default="sea",
        metavar="NAME|PATH",
        help="sea (default, synthetic with known drifts), elec2, or a CSV path",
    )
    p.add_argument("--target", default=None, metavar="COL", help="the label column of a CSV dataset")
    p.add_argument(
        "--events",
        type=positive_int,
        default=None,
        metavar="N",
        help="number of events (default: 6000 for sea, all rows otherwise)",
    )
    p.add_argument("--label-delay", type=non_negative_int, default=50, metavar="N")
    p.add_argument(
        "--rate",
        type=positive_float,
        default=100.0,
        metavar="N",
        help="events per second offered (default 100, within what the loop sustains on 2 cores today)",
    )
    p.add_argument("--out", type=Path, default=Path("out/demo"), metavar="DIR")
    p.add_argument("--timeout", type=positive_float, default=600.0, metavar="S", help="give up after S seconds")


def run(args: argparse.Namespace) -> int:
    from driftloop.demo import demo_cli

    return demo_cli(args)
