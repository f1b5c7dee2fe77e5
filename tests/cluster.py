"""Where the integration tests get a real Kafka and schema registry.

1. ``CONSENTGATE_BOOTSTRAP_SERVERS`` / ``CONSENTGATE_SCHEMA_REGISTRY_URL``: that cluster.
2. A Docker engine answers: testcontainers (Kafka in KRaft mode + a schema registry).
3. Otherwise the embedded launcher (``consentgate up``) in a temporary data dir.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunningCluster:
    bootstrap_servers: str
    schema_registry_url: str
    kind: str
    data_dir: Path | None = None


def _docker_answers() -> bool:
    """True when a Docker engine answers /_ping on its socket (DOCKER_HOST or the default)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: object = host[len("unix://"):]
        elif host.startswith("tcp://"):
            name, _, port = host[len("tcp://"):].partition(":")
            sock = socket.socket()
            address = (name, int(port or 2375))
        else:
            return False
        with sock:
            sock.settimeout(3)
            sock.connect(address)
            sock.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            reply = sock.recv(64)
        return reply.startswith(b"HTTP/1.") and b" 200 " in reply
    except OSError:
        return False


@contextlib.contextmanager
def _containers() -> Iterator[RunningCluster]:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.network import Network
    from testcontainers.core.waiting_utils import wait_for_logs
    from testcontainers.kafka import KafkaContainer

    with Network() as network:
        kafka = KafkaContainer("confluentinc/cp-kafka:7.7.1").with_kraft().with_network(network)
        kafka.with_network_aliases("kafka")
        with kafka:
            registry = (DockerContainer("confluentinc/cp-schema-registry:7.7.1").with_network(network)
                        .with_env("SCHEMA_REGISTRY_HOST_NAME", "schema-registry")
                        .with_env("SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS", "PLAINTEXT://kafka:9092")
                        .with_exposed_ports(8081))
            with registry:
                wait_for_logs(registry, "Server started", timeout=120)
                url = f"http://{registry.get_container_host_ip()}:{registry.get_exposed_port(8081)}"
                yield RunningCluster(kafka.get_bootstrap_server(), url, "testcontainers")


@contextlib.contextmanager
def embedded_cluster(data_dir: Path) -> Iterator[RunningCluster]:
    from consentgate.cluster import embedded
    from consentgate.settings import Settings

    settings = Settings(data_dir=data_dir, bootstrap_servers=None, schema_registry_url=None)
    info = embedded.up(settings)
    try:
        yield RunningCluster(info.bootstrap_servers, info.schema_registry_url, "embedded", data_dir)
    finally:
        embedded.down(settings)


@contextlib.contextmanager
def running_cluster(scratch: Path) -> Iterator[RunningCluster]:
    bootstrap = os.environ.get("CONSENTGATE_BOOTSTRAP_SERVERS")
    registry = os.environ.get("CONSENTGATE_SCHEMA_REGISTRY_URL")
    if bootstrap and registry:
        yield RunningCluster(bootstrap, registry, "external")
    elif _docker_answers():
        with _containers() as cluster:
            yield cluster
    else:
        with embedded_cluster(scratch) as cluster:
            yield cluster
