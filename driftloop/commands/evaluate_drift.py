"""``driftloop evaluate-drift``: each drift detector's delay, false alarms, misses and F1 on
synthetic streams, beside an always-alarm baseline and the detectors' merged incidents
(``driftloop.services.monitoring.evaluation``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from driftloop.commands._args import Subparsers, non_negative_int, positive_int

NAME = "evaluate-drift"
LONG_RUNNING = False


def add_parser(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        NAME, help="measure each drift detector's delay, false alarms, misses and F1 on synthetic streams"
    )
    p.add_argument("--seeds", type=positive_int, default=20, metavar="N", help="runs per detector and stream")
    p.add_argument("--events", type=positive_int, default=10_000, metavar="N", help="events per run")
    p.add_argument(
        "--detectors",
        default=None,
        metavar="LIST",
        help="comma-separated detector specs (default: every detector but the slow kswin)",
    )
    p.add_argument(
        "--tolerance",
        type=positive_int,
        default=1000,
        metavar="N",
        help="an alert within N events after a drift point detects it (default 1000)",
    )
    p.add_argument(
        "--cooldown",
        type=non_negative_int,
        default=300,
        metavar="N",
        help="alert de-bouncing, as DRIFTLOOP_MONITORING_ALERT_COOLDOWN (default 300)",
    )
    p.add_argument(
        "--incident-window",
        type=non_negative_int,
        default=500,
        metavar="N",
        help="the incident row merges the detectors' detections within N events of an incident's first into "
        "one alert, as DRIFTLOOP_MONITORING_INCIDENT_WINDOW does in records (default 500 events, about its "
        "1500 records at three per event; 0: each detection alone)",
    )
    p.add_argument("--out", type=Path, default=Path("out/drift"), metavar="DIR")


def run(args: argparse.Namespace) -> int:
    from driftloop.services.monitoring.evaluation import evaluate_drift_cli

    return evaluate_drift_cli(args)
