"""What the command modules share: the parser class and the argument types."""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path
from typing import NoReturn, TypeAlias

PROG = "driftloop"


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line, without the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


# What ``add_subparsers(parser_class=Parser)`` returns; argparse's class for it is private
# and not subscriptable at run time, so the alias is a string.
Subparsers: TypeAlias = "argparse._SubParsersAction[Parser]"


def usage_error(message: str) -> NoReturn:
    """A bad combination of arguments, found after parsing: reported as argparse reports one
    (one line on standard error, exit 2)."""
    Parser(prog=PROG).error(message)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must not be negative")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a positive finite number")
    return value


def existing_csv(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    return path


def iso_date(text: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def engine_option(p: argparse.ArgumentParser) -> None:
    """``--engine``, for every command that may start a local broker."""
    p.add_argument(
        "--engine",
        choices=("auto", "kafka", "tansu"),
        default=None,
        help="the local broker: auto (Apache Kafka when a JDK 17+ and its jars or Maven are there, else Tansu); "
        "default: DRIFTLOOP_BROKER_ENGINE or auto",
    )
