"""``driftloop run SERVICE``: one service in the foreground (``driftloop.services.<name>.app``)."""

from __future__ import annotations

import argparse
import importlib

from driftloop.commands._args import Subparsers
from driftloop.shared.settings import SERVICES

NAME = "run"
LONG_RUNNING = True


def add_parser(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(NAME, help="run one service")
    p.add_argument("service", choices=SERVICES, metavar="SERVICE", help=" | ".join(SERVICES))


def run(args: argparse.Namespace) -> int:
    module = importlib.import_module(f"driftloop.services.{args.service}.app")
    module.main()
    return 0
