"""``driftloop features export``: the offline feature store (``driftloop.services.features.export``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from driftloop.commands._args import Parser, Subparsers, iso_date, usage_error

NAME = "features"
LONG_RUNNING = False


def add_parser(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(NAME, help="the offline feature store")
    actions = p.add_subparsers(dest="features_command", required=True, parser_class=Parser, metavar="ACTION")
    x = actions.add_parser("export", help="write stored FeatureVectors or LabeledExamples as JSON lines or CSV")
    x.add_argument("--record", choices=("features", "examples"), default="features", help="default: features")
    x.add_argument("--feature-set", default=None, metavar="V", help="only this feature_set_version")
    x.add_argument("--since", type=iso_date, default=None, metavar="DATE", help="first UTC event date, YYYY-MM-DD")
    x.add_argument("--until", type=iso_date, default=None, metavar="DATE", help="last UTC event date, inclusive")
    x.add_argument("--format", choices=("jsonl", "csv"), default="jsonl", help="default: jsonl")
    x.add_argument("--out", type=Path, default=None, metavar="FILE", help="default: standard output")


def run(args: argparse.Namespace) -> int:
    if args.since and args.until and args.since > args.until:
        usage_error(f"--since {args.since} is after --until {args.until}")
    from driftloop.services.features.export import features_cli

    return features_cli(args)
