"""``driftloop bench``: throughput, latency and loop quality against bare baselines
(``driftloop/bench.py``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from driftloop.commands._args import Subparsers, engine_option, non_negative_int, positive_float, positive_int

NAME = "bench"
LONG_RUNNING = False


def add_parser(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(NAME, help="throughput, latency and loop quality against bare baselines")
    engine_option(p)
    p.add_argument("--dataset", default="sea", metavar="NAME|PATH", help="sea (default), elec2, or a CSV path")
    p.add_argument("--target", default=None, metavar="COL", help="the label column of a CSV dataset")
    p.add_argument("--events", type=positive_int, default=None, metavar="N", help="events (default: 6000 for sea)")
    p.add_argument(
        "--rate",
        type=positive_float,
        default=1000.0,
        metavar="N",
        help="offered events/s for the latency run (default 1000)",
    )
    p.add_argument("--label-delay", type=non_negative_int, default=50, metavar="N")
    p.add_argument(
        "--soak-s",
        type=positive_float,
        default=None,
        metavar="S",
        help="pace the latency run for S seconds, cycling the dataset if it ends sooner",
    )
    p.add_argument("--out", type=Path, default=Path("out/bench"), metavar="DIR")


def run(args: argparse.Namespace) -> int:
    from driftloop.bench import bench_cli

    return bench_cli(args)
