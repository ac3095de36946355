"""The driftloop command line (the contract in DESIGN.md)."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from aiokafka.errors import KafkaConnectionError
from pydantic import ValidationError

from driftloop.shared.errors import DriftloopError
from driftloop.shared.settings import SERVICES, CommonSettings


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line, without the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must not be negative")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a positive finite number")
    return value


def _existing_csv(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    return path


def _date(text: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _engine_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--engine",
        choices=("auto", "kafka", "tansu"),
        default=None,
        help="the local broker: auto (Apache Kafka when a JDK 17+ and its jars or Maven are there, else Tansu); "
        "default: DRIFTLOOP_BROKER_ENGINE or auto",
    )


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="driftloop", description="Streaming MLOps: the feedback loop on Kafka.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    b = sub.add_parser("broker", help="run the local broker (Apache Kafka, or Tansu without a JDK) in the foreground")
    b.add_argument("--port", type=_positive_int, default=None, help="default: DRIFTLOOP_BROKER_PORT or 9092")
    _engine_option(b)

    sub.add_parser("topics", help="create every topic with its partitions and policies")

    r = sub.add_parser("run", help="run one service")
    r.add_argument("service", choices=SERVICES, metavar="SERVICE", help=" | ".join(SERVICES))

    u = sub.add_parser("up", help="broker (unless KAFKA_BOOTSTRAP_SERVERS is set) + topics + all five services")
    _engine_option(u)

    rp = sub.add_parser("replay", help="replay a CSV as events plus delayed labels")
    rp.add_argument("csv", type=_existing_csv, metavar="CSV")
    rp.add_argument("--target", required=True, metavar="COL", help="the label column")
    rp.add_argument("--entity", default=None, metavar="COL", help="the entity column (default: one entity per row)")
    rp.add_argument(
        "--rate",
        type=_positive_float,
        default=None,
        metavar="N",
        help="events per second (default: as fast as possible)",
    )
    rp.add_argument(
        "--label-delay", type=_non_negative_int, default=50, metavar="N", help="send each label N events later"
    )
    rp.add_argument("--limit", type=_positive_int, default=None, metavar="N", help="at most N rows")

    d = sub.add_parser("demo", help="run the whole loop on a stream and write a report")
    _engine_option(d)
    d.add_argument(
        "--dataset",
        default="sea",
        metavar="NAME|PATH",
        help="sea (default, synthetic with known drifts), elec2, or a CSV path",
    )
    d.add_argument("--target", default=None, metavar="COL", help="the label column of a CSV dataset")
    d.add_argument(
        "--events",
        type=_positive_int,
        default=None,
        metavar="N",
        help="number of events (default: 6000 for sea, all rows otherwise)",
    )
    d.add_argument("--label-delay", type=_non_negative_int, default=50, metavar="N")
    d.add_argument(
        "--rate",
        type=_positive_float,
        default=100.0,
        metavar="N",
        help="events per second offered (default 100, within what the loop sustains on 2 cores today)",
    )
    d.add_argument("--out", type=Path, default=Path("out/demo"), metavar="DIR")
    m = sub.add_parser("models", help="the model registry: list, show, promote, rollback, archive")
    msub = m.add_subparsers(dest="models_command", required=True, parser_class=_Parser, metavar="ACTION")
    for action, text in (
        ("list", "every version of the model"),
        ("show", "one version's full record"),
        ("promote", "make a version the champion"),
        ("rollback", "back to the champion's parent"),
        ("archive", "archive a version that is not the champion"),
    ):
        a = msub.add_parser(action, help=text)
        if action in ("show", "promote", "archive"):
            a.add_argument("version", type=_positive_int, metavar="VERSION")
        if action in ("promote", "rollback", "archive"):
            a.add_argument("--reason", default=None, help="recorded on the version")
        a.add_argument("--model", default=None, metavar="NAME", help="default: DRIFTLOOP_MODEL_NAME")

    be = sub.add_parser("bench", help="throughput, latency and loop quality against bare baselines")
    _engine_option(be)
    be.add_argument("--dataset", default="sea", metavar="NAME|PATH", help="sea (default), elec2, or a CSV path")
    be.add_argument("--target", default=None, metavar="COL", help="the label column of a CSV dataset")
    be.add_argument("--events", type=_positive_int, default=None, metavar="N", help="events (default: 6000 for sea)")
    be.add_argument(
        "--rate",
        type=_positive_float,
        default=1000.0,
        metavar="N",
        help="offered events/s for the latency run (default 1000)",
    )
    be.add_argument("--label-delay", type=_non_negative_int, default=50, metavar="N")
    be.add_argument(
        "--soak-s",
        type=_positive_float,
        default=None,
        metavar="S",
        help="pace the latency run for S seconds, cycling the dataset if it ends sooner",
    )
    be.add_argument("--out", type=Path, default=Path("out/bench"), metavar="DIR")

    d.add_argument("--timeout", type=_positive_float, default=600.0, metavar="S", help="give up after S seconds")

    e = sub.add_parser(
        "evaluate-drift", help="measure each drift detector's delay, false alarms and misses on synthetic streams"
    )
    e.add_argument("--seeds", type=_positive_int, default=20, metavar="N", help="runs per detector and stream")
    e.add_argument("--events", type=_positive_int, default=10_000, metavar="N", help="events per run")
    e.add_argument(
        "--detectors",
        default=None,
        metavar="LIST",
        help="comma-separated detector specs (default: every detector but the slow kswin)",
    )
    e.add_argument(
        "--tolerance",
        type=_positive_int,
        default=1000,
        metavar="N",
        help="an alert within N events after a drift point detects it (default 1000)",
    )
    e.add_argument(
        "--cooldown",
        type=_non_negative_int,
        default=300,
        metavar="N",
        help="alert de-bouncing, as DRIFTLOOP_MONITORING_ALERT_COOLDOWN (default 300)",
    )
    e.add_argument("--out", type=Path, default=Path("out/drift"), metavar="DIR")

    f = sub.add_parser("features", help="the offline feature store")
    fsub = f.add_subparsers(dest="features_command", required=True, parser_class=_Parser, metavar="ACTION")
    fx = fsub.add_parser("export", help="write stored FeatureVectors or LabeledExamples as JSON lines or CSV")
    fx.add_argument("--record", choices=("features", "examples"), default="features", help="default: features")
    fx.add_argument("--feature-set", default=None, metavar="V", help="only this feature_set_version")
    fx.add_argument("--since", type=_date, default=None, metavar="DATE", help="first UTC event date, YYYY-MM-DD")
    fx.add_argument("--until", type=_date, default=None, metavar="DATE", help="last UTC event date, inclusive")
    fx.add_argument("--format", choices=("jsonl", "csv"), default="jsonl", help="default: jsonl")
    fx.add_argument("--out", type=Path, default=None, metavar="FILE", help="default: standard output")
    return p


def _cmd_broker(port: int | None) -> int:
    from driftloop.shared.broker import start_local_broker
    from driftloop.shared.log import configure_logging, get_logger

    common = CommonSettings()
    configure_logging(common.log_level, json=common.log_json)
    broker = start_local_broker(
        common.broker_engine, port or common.broker_port, common.data_dir, heap_mb=common.broker_heap_mb
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


def _cmd_topics() -> int:
    from driftloop.shared.kafka import client_options, create_topics
    from driftloop.shared.topics import Topics

    common = CommonSettings()
    specs = Topics(common.topic_prefix, common.partitions).catalogue()
    created = asyncio.run(
        create_topics(common.bootstrap_servers, specs, common.replication_factor, options=client_options(common))
    )
    for spec in specs:
        state = "created" if spec.name in created else "exists"
        print(f"{spec.name:<40} partitions={spec.partitions:<3} {spec.config.get('cleanup.policy', '')}  {state}")
    return 0


def _cmd_run(service: str) -> int:
    module = importlib.import_module(f"driftloop.services.{service}.app")
    module.main()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command not in ("run", "up", "broker"):
        # One-shot commands say what failed in one line; aiokafka's own connection errors
        # would add lines of their own before it.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    if getattr(args, "engine", None):
        # One choice for every command that starts a broker, and for the processes it starts.
        os.environ["DRIFTLOOP_BROKER_ENGINE"] = args.engine
    if args.command == "features" and args.since and args.until and args.since > args.until:
        parser.error(f"--since {args.since} is after --until {args.until}")
    try:
        if args.command == "broker":
            return _cmd_broker(args.port)
        if args.command == "topics":
            return _cmd_topics()
        if args.command == "run":
            return _cmd_run(args.service)
        if args.command == "up":
            from driftloop.runner import up

            return up()
        if args.command == "replay":
            from driftloop.replay import replay_cli

            return replay_cli(args)
        if args.command == "models":
            from driftloop.models_cli import models_cli

            return models_cli(args)
        if args.command == "bench":
            from driftloop.bench import bench_cli

            return bench_cli(args)
        if args.command == "demo":
            from driftloop.demo import demo_cli

            return demo_cli(args)
        if args.command == "features":
            from driftloop.services.features.export import features_cli

            return features_cli(args)
        if args.command == "evaluate-drift":
            from driftloop.services.monitoring.evaluation import evaluate_drift_cli

            return evaluate_drift_cli(args)
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
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
