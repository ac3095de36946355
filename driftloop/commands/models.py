"""``driftloop models ACTION``: the model registry for operators (``driftloop/models_cli.py``)."""

from __future__ import annotations

import argparse

from driftloop.commands._args import Parser, Subparsers, positive_int

NAME = "models"
LONG_RUNNING = False

ACTIONS = (
    ("list", "every version of the model"),
    ("show", "one version's full record"),
    ("promote", "make a version the champion"),
    ("rollback", "back to the champion's parent"),
    ("archive", "archive a version that is not the champion"),
)


def add_parser(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(NAME, help="the model registry: list, show, promote, rollback, archive")
    actions = p.add_subparsers(dest="models_command", required=True, parser_class=Parser, metavar="ACTION")
    for action, text in ACTIONS:
        a = actions.add_parser(action, help=text)
        if action in ("show", "promote", "archive"):
            a.add_argument("version", type=positive_int, metavar="VERSION")
        if action in ("promote", "rollback", "archive"):
            a.add_argument("--reason", default=None, help="recorded on the version")
        a.add_argument("--model", default=None, metavar="NAME", help="default: DRIFTLOOP_MODEL_NAME")


def run(args: argparse.Namespace) -> int:
    from driftloop.models_cli import models_cli

    return models_cli(args)
