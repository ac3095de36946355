"""The driftloop command line (the contract in DESIGN.md).

Each subcommand is a module of ``driftloop/commands/`` (its arguments and what it runs);
this module assembles them and turns the errors every command can meet into one line.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from aiokafka.errors import KafkaConnectionError
from pydantic import ValidationError

from driftloop.commands import (
    Command,
    bench,
    broker,
    demo,
    evaluate_drift,
    features,
    models,
    replay,
    run,
    topics,
    up,
)
from driftloop.commands._args import PROG, Parser
from driftloop.shared.errors import DriftloopError

# In the order of `driftloop --help`.
COMMANDS: tuple[Command, ...] = (broker, topics, run, up, replay, demo, models, bench, evaluate_drift, features)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Streaming MLOps: the feedback loop on Kafka.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = {c.NAME: c for c in COMMANDS}[args.command]
    if not command.LONG_RUNNING:
        # One-shot commands say what failed in one line; aiokafka's own connection errors
        # would add lines of their own before it.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    if getattr(args, "engine", None):
        # One choice for every command that starts a broker, and for the processes it starts.
        os.environ["DRIFTLOOP_BROKER_ENGINE"] = args.engine
    try:
        return command.run(args)
    except ValidationError as exc:
        err = exc.errors()[0]
        print(f"driftloop: error: setting {err['loc'][0] if err['loc'] else '?'}: {err['msg']}", file=sys.stderr)
        return 2
    except DriftloopError as exc:
        print(f"driftloop: error: {exc}", file=sys.stderr)
        return 1
    except KafkaConnectionError as exc:
        # A client started outside shared/kafka.py's start_client: still one line.
        print(f"driftloop: error: cannot reach Kafka ({exc})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
