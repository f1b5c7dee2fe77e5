"""The one settings object. Nothing else in consentgate reads ``os.environ``.

Every field can be set by a ``CONSENTGATE_<NAME>`` environment variable or by the
matching command-line flag. Connection addresses that are not given fall back to
what ``consentgate up`` recorded in the data directory.
"""

from __future__ import annotations

import json
import stat
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from consentgate.errors import ConfigurationError
from consentgate.pseudonyms import MIN_SECRET_BYTES, key_id
from consentgate.security.properties import kafka_client_conf, registry_client_conf

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
    kafka_config: Path | None = Field(None, description="Java-style properties file of librdkafka client "
                                      "settings (security.protocol, sasl.*, ssl.*) for every Kafka client")
    schema_registry_config: Path | None = Field(None, description="properties file of schema registry "
                                                "client settings (basic.auth.user.info, ssl.ca.location)")
    topic_prefix: str = Field("", description="prefix prepended to every topic name")
    secure: bool = Field(False, description="up/demo: the embedded broker with SASL_SSL, SCRAM and ACLs")
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
    consent_store: Literal["compact", "memory", "rocksdb"] = Field(
        "compact", description="the consent view: packed in memory (compact, the compiled kernel's), raw "
        "bytes in memory, or on disk")
    gate_kernel: Literal["auto", "compiled", "reference"] = Field(
        "auto", description="the gate's batch kernel: compiled (Rust), reference (Python), or auto: compiled "
        "when it is built here")

    # repr=False: the URL may hold a password; print redacted_ledger() instead.
    ledger_url: str | None = Field(None, repr=False, description="SQLAlchemy URL of the payout ledger; "
                                   "default: SQLite in the data directory")
    metering_group_id: str = "consentgate-metering"
    max_units: int = Field(10_000, ge=1, description="a contribution claiming more units is rejected")

    # Training-set sink (connectors/iceberg_*) and regate (consentgate/regate)
    iceberg_catalog_url: str | None = Field(None, description="SQLAlchemy URL of the Iceberg SQL catalog; "
                                            "default: SQLite in the data directory")
    iceberg_warehouse: str | None = Field(None, description="where table files go (a path or URI such as "
                                          "s3://bucket/prefix); default: the data directory")
    iceberg_namespace: str = Field("consentgate", min_length=1)
    sink_max_records: int = Field(50_000, ge=1, description="records per Iceberg commit at most")
    sink_commit_interval_s: float = Field(10.0, gt=0, description="commit at least this often while input flows")
    snapshot_max_age_s: float = Field(86_400.0, ge=0, description="`sink expire` keeps snapshots this young")
    orphan_min_age_s: float = Field(3_600.0, ge=0, description="`sink expire` deletes unreferenced files this old")
    regate_batch_size: int = Field(5000, ge=1, le=100_000, description="records per regate transaction")

    kafka_version: str = "4.1.1"
    apicurio_version: str = "3.0.9"
    startup_timeout_s: float = Field(120.0, gt=0)

    @property
    def clock_skew(self) -> timedelta:
        return timedelta(seconds=self.clock_skew_s)

    def resolved(self, client: bool = True) -> Settings:
        """Fill addresses and the pseudonym secret from ``consentgate up``'s records.

        ``client``: this command connects to Kafka as a client (``up`` and ``down`` do not), so a
        secure cluster recorded in the data dir needs ``--kafka-config``.
        """
        updates: dict[str, Any] = {}
        cluster_file = self.data_dir / CLUSTER_FILE
        if (self.bootstrap_servers is None or self.schema_registry_url is None) and cluster_file.exists():
            recorded = json.loads(cluster_file.read_text())
            if self.bootstrap_servers is None:
                updates["bootstrap_servers"] = recorded["bootstrap_servers"]
            if self.schema_registry_url is None:
                updates["schema_registry_url"] = recorded["schema_registry_url"]
        secret_file = self.data_dir / SECRET_FILE
        if secret_file.exists():
            recorded = _read_secret_file(secret_file)
            if self.pseudonym_secret is None:
                updates["pseudonym_secret"] = SecretStr(recorded)
            elif self.pseudonym_secret.get_secret_value() != recorded:
                # Two processes hashing with different secrets write unjoinable pseudonyms: never guess.
                raise ConfigurationError(
                    f"the pseudonym secret given (key id {key_id(self.pseudonym_secret.get_secret_value().encode())})"
                    f" differs from the one in {secret_file} (key id {key_id(recorded.encode())}): unset "
                    "CONSENTGATE_PSEUDONYM_SECRET to use the data dir's, or use another --data-dir")
        resolved = self.model_copy(update=updates) if updates else self
        if (client and resolved.kafka_config is None and cluster_file.exists() and self.bootstrap_servers is None
                and json.loads(cluster_file.read_text()).get("secure")):
            raise ConfigurationError(
                f"the cluster in {self.data_dir} is secure: pass --kafka-config "
                f"{self.data_dir / 'clients'}/<role>.properties (CONSENTGATE_KAFKA_CONFIG) for the role "
                "this command acts as")
        resolved.kafka_client_conf()  # a missing or invalid client config fails now, not in a worker
        resolved.registry_conf(require_url=False)
        return resolved

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
        secret = self.pseudonym_secret.get_secret_value().encode()
        if len(secret) < MIN_SECRET_BYTES:
            raise ConfigurationError(
                f"the pseudonym secret is {len(secret)} bytes; at least {MIN_SECRET_BYTES} are required "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
        return secret

    def ledger(self) -> str:
        return self.ledger_url or f"sqlite:///{self.data_dir / 'ledger.db'}"

    def iceberg_catalog(self) -> str:
        return self.iceberg_catalog_url or f"sqlite:///{self.data_dir / 'iceberg' / 'catalog.db'}"

    def iceberg_location(self) -> str:
        return self.iceberg_warehouse or (self.data_dir / "iceberg" / "warehouse").resolve().as_uri()

    def redacted_ledger(self) -> str:
        """The ledger URL with its password masked, for logs and messages."""
        return redact_url(self.ledger())

    def kafka_client_conf(self) -> dict[str, str]:
        """The librdkafka settings of ``--kafka-config`` (empty without one)."""
        return kafka_client_conf(self.kafka_config) if self.kafka_config else {}

    def registry_conf(self, require_url: bool = True) -> dict[str, str]:
        """The ``SchemaRegistryClient`` configuration: the URL plus ``--schema-registry-config``."""
        conf = registry_client_conf(self.schema_registry_config) if self.schema_registry_config else {}
        if require_url or self.schema_registry_url:
            conf = {"url": self.require_registry(), **conf}
        return conf

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def librdkafka(self, role: Literal["producer", "consumer", "admin"], **extra: Any) -> dict[str, Any]:
        """Render the librdkafka configuration dict for one client role.

        The ``--kafka-config`` file comes first; what the role needs for correctness is set after it
        (and the file may not name those keys at all, see ``security.properties``).
        """
        conf: dict[str, Any] = {**self.kafka_client_conf(), "bootstrap.servers": self.require_bootstrap()}
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


def redact_url(url: str) -> str:
    """``url`` with the password of its user-info part replaced by ``***``."""
    from sqlalchemy.engine import make_url  # only where a URL is printed
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        scheme, sep, rest = url.partition("://")
        userinfo, at, host = rest.rpartition("@")
        if not (sep and at and ":" in userinfo):
            return url
        return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"


def _read_secret_file(path: Path) -> str:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigurationError(f"{path} is readable by others (mode {mode:04o}): run `chmod 600 {path}`")
    return path.read_text().strip()


__all__ = ["CLUSTER_FILE", "SECRET_FILE", "Settings", "redact_url"]
