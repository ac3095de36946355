"""One module per ``driftloop`` subcommand.

Each module names its command (``NAME``), defines its arguments (``add_parser``) and runs
it (``run``, which returns the exit code). ``LONG_RUNNING`` marks the commands that run
until stopped (a broker, a service, the whole stack): they keep aiokafka's own log lines,
which the one-shot commands silence so that a failure is reported in one line.

``driftloop/cli.py`` assembles them in the order of ``driftloop --help`` and keeps what
every command shares: the error handling and the ``--engine`` setting. A module imports
the code it runs inside ``run``, so that parsing the command line (and ``--help``) loads
none of it. The argument types they share are in ``_args.py``.

A new command is a module here with those four names, listed in ``cli.COMMANDS``.
"""

from __future__ import annotations

import argparse
from typing import Protocol

from driftloop.commands._args import Subparsers


class Command(Protocol):
    """What ``driftloop/cli.py`` needs of a command module."""

    NAME: str
    LONG_RUNNING: bool

    def add_parser(self, subparsers: Subparsers) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...
