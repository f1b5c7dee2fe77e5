"""The one settings object. Nothing else in consentgate reads ``os.environ``.

Every field can be set by a ``CONSENTGATE_<NAME>`` environment variable or by the
matching command-line flag. Connection addresses that are not given fall back to
what ``consentgate up`` recorded in the data directory.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from consentgate.errors import ConfigurationError

CLUSTER_FILE = "cluster.json"
SECRET_FILE = "pseudonym.secret"


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "consentgate"


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "consentgate"


class Settings(BaseSettings):
    """Frozen configuration for every consentgate command and worker."""

    model_config = SettingsConfigDict(
        env_prefix="CONSENTGATE_", frozen=True, extra="forbid", env_ignore_empty=True
    )

    bootstrap_servers: str | None = Field(None, description="Kafka bootstrap servers")
    schema_registry_url: str | None = Field(None, description="Confluent-compatible registry URL")
    topic_prefix: str = Field("", description="prefix prepended to every topic name")
    catalog: Path | None = Field(None, description="purpose catalog; default: the shipped one")
    data_dir: Path = Field(default_factory=_default_data_dir)
    cache_dir: Path = Field(default_factory=_default_cache_dir)
    pseudonym_secret: SecretStr | None = Field(None, description="HMAC key for pseudonyms")

    partitions: int = Field(6, ge=1)
    replication_factor: int = Field(1, ge=1)

    worker_id: str | None = Field(None, description="stable id of this worker; default: the host name")
    group_id: str = "consentgate-gate"
    transactional_id_prefix: str = "consentgate-gate"
    batch_size: int = Field(2000, ge=1, le=100_000)
    batch_timeout_s: float = Field(0.2, gt=0, description="how long an idle fetch waits for a first record")
    commit_interval_ms: int = Field(25, ge=0, le=60_000, description="how long a transaction may stay open "
                                    "taking more fetches before it commits (as Kafka Streams' commit.interval.ms)")
    clock_skew_s: float = Field(300.0, ge=0)
    max_record_bytes: int = Field(1_000_000, ge=64)
    metrics_port: int | None = Field(None, ge=0, le=65535)
    metrics_host: str = Field("127.0.0.1", description="address the metrics endpoint binds to")
    session_timeout_ms: int = Field(10_000, ge=1000)
    transaction_timeout_ms: int = Field(10_000, ge=1000)
    consent_store: Literal["memory", "rocksdb"] = "memory"

    ledger_url: str | None = Field(None, description="SQLAlchemy URL of the payout ledger; "
                                   "default: SQLite in the data directory")
    metering_group_id: str = "consentgate-metering"
    max_units: int = Field(10_000, ge=1, description="a contribution claiming more units is rejected")

    kafka_version: str = "4.1.1"
    apicurio_version: str = "3.0.9"
    startup_timeout_s: float = Field(120.0, gt=0)

    @property
    def clock_skew(self) -> timedelta:
        return timedelta(seconds=self.clock_skew_s)

    def resolved(self) -> Settings:
        """Fill addresses and the pseudonym secret from ``consentgate up``'s records."""
        updates: dict[str, Any] = {}
        cluster_file = self.data_dir / CLUSTER_FILE
        if (self.bootstrap_servers is None or self.schema_registry_url is None) and cluster_file.exists():
            recorded = json.loads(cluster_file.read_text())
            if self.bootstrap_servers is None:
                updates["bootstrap_servers"] = recorded["bootstrap_servers"]
            if self.schema_registry_url is None:
                updates["schema_registry_url"] = recorded["schema_registry_url"]
        secret_file = self.data_dir / SECRET_FILE
        if self.pseudonym_secret is None and secret_file.exists():
            updates["pseudonym_secret"] = SecretStr(secret_file.read_text().strip())
        return self.model_copy(update=updates) if updates else self

    def require_bootstrap(self) -> str:
        if not self.bootstrap_servers:
            raise ConfigurationError(
                "no Kafka address: pass --bootstrap-servers, set CONSENTGATE_BOOTSTRAP_SERVERS, "
                "or run `consentgate up`"
            )
        return self.bootstrap_servers

    def require_registry(self) -> str:
        if not self.schema_registry_url:
            raise ConfigurationError(
                "no schema registry: pass --schema-registry-url, set "
                "CONSENTGATE_SCHEMA_REGISTRY_URL, or run `consentgate up`"
            )
        return self.schema_registry_url

    def require_secret(self) -> bytes:
        if self.pseudonym_secret is None or not self.pseudonym_secret.get_secret_value():
            raise ConfigurationError(
                "no pseudonym secret: set CONSENTGATE_PSEUDONYM_SECRET (or run `consentgate up`, "
                "which creates a local one)"
            )
        return self.pseudonym_secret.get_secret_value().encode()

    def ledger(self) -> str:
        return self.ledger_url or f"sqlite:///{self.data_dir / 'ledger.db'}"

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def librdkafka(self, role: Literal["producer", "consumer", "admin"], **extra: Any) -> dict[str, Any]:
        """Render the librdkafka configuration dict for one client role."""
        conf: dict[str, Any] = {"bootstrap.servers": self.require_bootstrap()}
        if role == "producer":
            conf.update({
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "partitioner": "murmur2_random",
                "message.max.bytes": max(self.max_record_bytes * 2, 1_048_576),
            })
        elif role == "consumer":
            conf.update({
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "fetch.queue.backoff.ms": 10,
                "enable.partition.eof": False,
            })
        conf.update(extra)
        return conf
