"""``driftloop broker``: the local broker (Apache Kafka, or Tansu without a JDK) in the foreground."""

from __future__ import annotations

import argparse
import signal
import sys
import time

from driftloop.commands._args import Subparsers, engine_option, positive_int

NAME = "broker"
LONG_RUNNING = True


def add_parser(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        NAME, help="run the local broker (Apache Kafka, or Tansu without a JDK) in the foreground"
    )
    p.add_argument("--port", type=positive_int, default=None, help="default: DRIFTLOOP_BROKER_PORT or 9092")
    engine_option(p)


def run(args: argparse.Namespace) -> int:
    from driftloop.shared.broker import start_local_broker
    from driftloop.shared.errors import DriftloopError
    from driftloop.shared.log import configure_logging, get_logger
    from driftloop.shared.settings import CommonSettings

    common = CommonSettings()
    configure_logging(common.log_level, json=common.log_json)
    broker = start_local_broker(
        common.broker_engine, args.port or common.broker_port, common.data_dir, heap_mb=common.broker_heap_mb
    )
    get_logger(service="broker").info(
        "broker_ready",
        engine=broker.engine,
        version=broker.version,
        bootstrap=broker.bootstrap_servers,
        pid=broker.process.pid if broker.process else None,
    )
    print(
        f"driftloop: {broker.engine} {broker.version} ready on {broker.bootstrap_servers} "
        f"(pid {broker.process.pid if broker.process else '?'})",
        file=sys.stderr,
    )
    stop = {"flag": False}

    def _stop(*_: object) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stop["flag"]:
            if broker.process is None or broker.process.poll() is not None:
                raise DriftloopError(f"the {broker.engine} broker exited unexpectedly", code="broker_died")
            time.sleep(0.2)
    finally:
        broker.stop()
    return 0
