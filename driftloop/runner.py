"""Starting and stopping the stack: embedded broker, topics, the five services as processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from driftloop.shared.broker import Broker, free_port, start_local_broker
from driftloop.shared.errors import ConfigError, DriftloopError
from driftloop.shared.kafka import client_options, create_topics
from driftloop.shared.log import configure_logging, get_logger
from driftloop.shared.settings import SERVICES, CommonSettings
from driftloop.shared.topics import Topics

# Monitoring and retraining are off the path an event takes to its prediction: at a lower
# priority they leave that path the CPU first (what it saves: README, Measured choices).
BACKGROUND_SERVICES = ("monitoring", "retraining")
BACKGROUND_NICE = 10
# What can run as several instances in one group (README, Scaling): these keep their state
# per input partition. Monitoring's drift detectors and retraining's learners see the whole
# stream, and retraining is the registry's one writer, so each runs as one instance.
SCALABLE_SERVICES = ("ingestion", "features", "inference")
MAX_REPLICAS = 64


def parse_replicas(text: str) -> dict[str, int]:
    """``SERVICE=N,...`` (``features=2,inference=2``) as {service: N}; ConfigError, one line, if bad."""
    out: dict[str, int] = {}
    for item in (i.strip() for i in text.split(",")):
        name, sep, count = item.partition("=")
        if not sep or not count.strip().isdigit():
            raise ConfigError(f"--replicas {text!r}: write SERVICE=N pairs, e.g. features=2,inference=2")
        name, n = name.strip(), int(count)
        if name not in SERVICES:
            raise ConfigError(f"--replicas: unknown service {name!r}; the services are {', '.join(SERVICES)}")
        if not 1 <= n <= MAX_REPLICAS:
            raise ConfigError(f"--replicas {name}={n}: give 1 to {MAX_REPLICAS}")
        if n > 1 and name not in SCALABLE_SERVICES:
            raise ConfigError(
                f"--replicas {name}={n}: {name} runs as one instance (it sees the whole stream); "
                f"scalable: {', '.join(SCALABLE_SERVICES)}"
            )
        out[name] = n
    return out


def instance_name(service: str, replica: int) -> str:
    """The first instance of a service is named after it; the others ``<service>-<k>``."""
    return service if replica == 0 else f"{service}-{replica}"


class ServiceDied(DriftloopError):
    code = "service_died"


@dataclass
class Stack:
    """The broker (unless an existing Kafka is configured), the topics and the five services.

    ``env`` overrides the environment the services inherit; ``log_dir`` (if given) gets one
    log file per instance instead of the caller's stderr. ``replicas`` runs that many
    instances of a service in its consumer group (``procs`` is keyed by instance name).
    """

    env: dict[str, str] = field(default_factory=dict)
    log_dir: Path | None = None
    broker_port: int | None = None
    services: tuple[str, ...] = SERVICES
    replicas: dict[str, int] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    #: The /metrics port of each instance (0: none).
    ports: dict[str, int] = field(default_factory=dict)
    #: The HTTP port of each inference and ingestion instance after the first (which keeps the
    #: configured one).
    http_ports: dict[str, int] = field(default_factory=dict)
    broker: Broker | None = None
    _logs: list[IO[bytes]] = field(default_factory=list)

    def start(self) -> Stack:
        common = CommonSettings()
        base_env = {**os.environ, **self.env}
        if self.log_dir:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        if common.uses_embedded_broker and "KAFKA_BOOTSTRAP_SERVERS" not in self.env:
            port = self.broker_port or common.broker_port
            log_path = self.log_dir / "broker.log" if self.log_dir else None
            engine = base_env.get("DRIFTLOOP_BROKER_ENGINE", common.broker_engine)
            data_dir = Path(base_env.get("DRIFTLOOP_DATA_DIR", str(common.data_dir)))
            self.broker = start_local_broker(
                engine,  # type: ignore[arg-type]  # validated by CommonSettings in the CLI
                port,
                data_dir,
                log_path,
                heap_mb=common.broker_heap_mb,
            )
            base_env["KAFKA_BOOTSTRAP_SERVERS"] = self.broker.bootstrap_servers
            # What auto chose: the services' producers are idempotent unless it is Tansu.
            base_env["DRIFTLOOP_BROKER_ENGINE"] = self.broker.engine
        self.env = base_env
        bootstrap = base_env["KAFKA_BOOTSTRAP_SERVERS"]
        prefix = base_env.get("DRIFTLOOP_TOPIC_PREFIX", common.topic_prefix)
        partitions = int(base_env.get("DRIFTLOOP_PARTITIONS", common.partitions))
        # Source topics must exist before the workers start, or the broker auto-creates them
        # with its own partition count, which the changelogs (one partition per input partition) must match.
        replication = int(base_env.get("DRIFTLOOP_REPLICATION_FACTOR", common.replication_factor))
        asyncio.run(
            create_topics(
                bootstrap, Topics(prefix, partitions).catalogue(), replication, options=client_options(common)
            )
        )
        for name in self.services:
            for k in range(self.replicas.get(name, 1)):
                self.start_service(instance_name(name, k))
        return self

    def start_service(self, instance: str) -> None:
        """Start (or restart, under the same instance name and port) one instance."""
        service, _, k = instance.partition("-")
        replica = int(k or 0)
        out: IO[bytes] | None = None
        if self.log_dir:
            out = open(self.log_dir / f"{instance}.log", "ab")  # noqa: SIM115 - closed in stop()
            self._logs.append(out)
        port_var = f"DRIFTLOOP_{service.upper()}_METRICS_PORT"
        if instance not in self.ports:
            configured = self.env.get(port_var)
            # The other instances of a service get free ports of their own.
            port = int(configured) if configured and replica == 0 else (free_port() if configured else 0)
            self.ports[instance] = port
        env = {
            **self.env,
            # A static group member: restarted under the same name, it takes its partitions
            # back at once instead of waiting out the session timeout.
            "DRIFTLOOP_INSTANCE_ID": f"{self.env.get('DRIFTLOOP_INSTANCE_ID') or service}-{replica}",
        }
        if self.ports[instance]:
            env[port_var] = str(self.ports[instance])
        http_var = f"DRIFTLOOP_{service.upper()}_HTTP_PORT"
        if service in ("inference", "ingestion") and replica and self.env.get(http_var) != "0":
            # Each instance serves HTTP (OIP, ingest) on a port of its own; the first keeps the configured one.
            env[http_var] = str(self.http_ports.setdefault(instance, free_port()))
        self.procs[instance] = subprocess.Popen(
            [sys.executable, "-m", "driftloop.cli", "run", service],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            start_new_session=True,  # our Ctrl-C handling stops them in order
            # Monitoring and retraining are off the serving path: on a shared machine the
            # path an event takes to its prediction gets the CPU first.
            preexec_fn=(lambda: os.nice(BACKGROUND_NICE)) if service in BACKGROUND_SERVICES else None,
        )

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Until every service reports driftloop_service_ready 1 on its /metrics (it owns
        partitions and has recovered their state), so that a replay starting now measures
        the loop, not the consumer-group join."""
        deadline = time.monotonic() + timeout_s
        waiting = set(self.procs)
        while waiting and time.monotonic() < deadline:
            self.check()
            for name in list(waiting):
                port = self.ports.get(name)
                if not port or _metric_is_one(port, "driftloop_service_ready"):
                    waiting.discard(name)
            time.sleep(0.2)
        if waiting:
            raise ServiceDied(f"not ready within {timeout_s:.0f} s: {', '.join(sorted(waiting))}")

    def check(self) -> None:
        """Raise ServiceDied if any service has exited."""
        for name, proc in self.procs.items():
            rc = proc.poll()
            if rc is not None:
                where = f"; see {self.log_dir / (name + '.log')}" if self.log_dir else ""
                raise ServiceDied(f"service {name} (pid {proc.pid}) exited with code {rc}{where}")
        if self.broker and self.broker.process and self.broker.process.poll() is not None:
            raise ServiceDied(f"the {self.broker.engine} broker exited")

    def resources(self) -> tuple[float, float]:
        """(CPU seconds, peak RSS in MB) summed over the running services, from /proc."""
        per = self.resources_by_service()
        return sum(c for c, _ in per.values()), sum(r for _, r in per.values())

    def resources_by_service(self) -> dict[str, tuple[float, float]]:
        """Per running service: (CPU seconds so far, peak RSS in MB), from /proc."""
        tick = os.sysconf("SC_CLK_TCK")
        out: dict[str, tuple[float, float]] = {}
        for name, proc in self.procs.items():
            try:
                stat = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                cpu = (int(stat[11]) + int(stat[12])) / tick  # utime + stime
                rss = 0.0
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        rss = int(line.split()[1]) / 1024
                out[name] = (cpu, rss)
            except (OSError, IndexError, ValueError):
                continue
        return out

    def stop_services(self, timeout_s: float = 15.0) -> dict[str, int | None]:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        codes: dict[str, int | None] = {}
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait()
        for f in self._logs:
            f.close()
        self._logs.clear()
        return codes

    def stop(self) -> None:
        self.stop_services()
        if self.broker:
            self.broker.stop()
            self.broker = None

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _metric_is_one(port: int, name: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            body = resp.read().decode()
    except OSError:
        return False
    return any(line.startswith(name + "{") and line.rstrip().endswith(" 1.0") for line in body.splitlines())


def demo_env() -> dict[str, str]:
    """Free metrics ports (and the HTTP ports of inference and ingestion), so a demo runs beside
    anything else on the machine."""
    ports = {f"DRIFTLOOP_{s.upper()}_METRICS_PORT": str(free_port()) for s in SERVICES}
    return {
        **ports,
        "DRIFTLOOP_INFERENCE_HTTP_PORT": str(free_port()),
        "DRIFTLOOP_INGESTION_HTTP_PORT": str(free_port()),
    }


def up(replicas: dict[str, int] | None = None) -> int:
    """`driftloop up`: run everything in the foreground until Ctrl-C or a service dies."""
    common = CommonSettings()
    configure_logging(common.log_level, json=common.log_json)
    log = get_logger(service="up")
    stack = Stack(replicas=replicas or {})
    stopping = {"flag": False}

    def _stop(*_: object) -> None:
        stopping["flag"] = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        stack.start()
        log.info(
            "stack_up",
            engine=stack.broker.engine if stack.broker else "external",
            broker_version=stack.broker.version if stack.broker else None,
            bootstrap=stack.env["KAFKA_BOOTSTRAP_SERVERS"],
            services={n: p.pid for n, p in stack.procs.items()},
        )
        while not stopping["flag"]:
            stack.check()
            time.sleep(0.5)
        log.info("stack_stopping")
        return 0
    except ServiceDied as exc:
        print(f"driftloop up: error: {exc}; stopping everything", file=sys.stderr)
        return 1
    finally:
        stack.stop()
