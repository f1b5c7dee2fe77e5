from __future__ import annotations

import json
from pathlib import Path

import fastavro
import pytest
import yaml
from consentgate.connectors.kafka import murmur2, partition_for
from consentgate.schemas.contracts import CONTRACTS, schema_json
from pydantic import ValidationError

from consentgate.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("key", "signed"), [
    # Vectors from Kafka's own UtilsTest (Java's Utils.murmur2).
    ("21", -973932308), ("foobar", -790332482), ("a-little-bit-long-string", -985981536),
    ("a-little-bit-longer-string", -1486304829), ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    ("abc", 479470107),
])
def test_murmur2_matches_java_client(key: str, signed: int) -> None:
    assert murmur2(key.encode()) == signed & 0xFFFFFFFF


def test_partition_for_is_positive_modulo() -> None:
    assert partition_for(b"21", 7) == (-973932308 & 0x7FFFFFFF) % 7


def _fields(schema: object) -> list[dict[str, object]]:
    found: list[dict[str, object]] = []
    if isinstance(schema, dict):
        for field in schema.get("fields", []):
            found.append(field)
            found.extend(_fields(field["type"]))
        for key in ("items", "values"):
            if key in schema:
                found.extend(_fields(schema[key]))
    elif isinstance(schema, list):
        for branch in schema:
            found.extend(_fields(branch))
    return found


@pytest.mark.parametrize("contract", CONTRACTS)
def test_every_contract_parses_and_documents_every_field(contract: str) -> None:
    schema = schema_json(contract)
    fastavro.parse_schema(schema)
    undocumented = [f["name"] for f in _fields(schema) if not f.get("doc")]
    assert undocumented == []


def test_user_identifiers_are_tagged_pii() -> None:
    for contract in ("ActivityEvent", "ConsentState", "ConsentChange", "Decision", "Contribution"):
        user_id = next(f for f in schema_json(contract)["fields"] if f["name"] == "user_id")
        assert user_id["confluent:tags"] == ["PII"], contract
    pseudonym = next(f for f in schema_json("TrainingRecord")["fields"] if f["name"] == "pseudonym")
    assert "confluent:tags" not in pseudonym


def test_settings_env_and_rejection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSENTGATE_BATCH_SIZE", "777")
    monkeypatch.setenv("CONSENTGATE_BOOTSTRAP_SERVERS", "k:9092")
    settings = Settings()
    assert settings.batch_size == 777
    assert settings.librdkafka("consumer", **{"group.id": "g"}) == {
        "bootstrap.servers": "k:9092", "enable.auto.commit": False, "isolation.level": "read_committed",
        "auto.offset.reset": "earliest", "fetch.queue.backoff.ms": 10, "enable.partition.eof": False,
        "group.id": "g"}
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Settings(not_a_setting=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        settings.batch_size = 3  # type: ignore[misc]
    assert "hunter2-key" not in repr(Settings(pseudonym_secret="hunter2-key"))  # type: ignore[arg-type]


def test_settings_fall_back_to_what_up_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONSENTGATE_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("CONSENTGATE_SCHEMA_REGISTRY_URL", raising=False)
    (tmp_path / "cluster.json").write_text(json.dumps({"bootstrap_servers": "127.0.0.1:1",
                                                       "schema_registry_url": "http://r", "processes": []}))
    (tmp_path / "pseudonym.secret").write_text("s3-" + "x" * 29 + "\n")
    (tmp_path / "pseudonym.secret").chmod(0o600)
    resolved = Settings(data_dir=tmp_path).resolved()
    assert (resolved.bootstrap_servers, resolved.schema_registry_url) == ("127.0.0.1:1", "http://r")
    assert resolved.require_secret() == b"s3-" + b"x" * 29
    assert Settings(data_dir=tmp_path, bootstrap_servers="x:1").resolved().bootstrap_servers == "x:1"


def test_docker_compose_parses_and_is_consistent() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "schema-registry", "topics", "gate", "metering", "postgres"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert services["schema-registry"]["image"].startswith("confluentinc/cp-schema-registry:")
    published = [p.split(":")[0] for s in services.values() for p in s.get("ports", [])]
    assert len(published) == len(set(published)), "two services publish the same host port"
    assert services["kafka"]["ports"] == ["9092:9092"]
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert "PLAINTEXT://kafka:19092" in advertised and "EXTERNAL://localhost:9092" in advertised
    internal = "kafka:19092"
    assert services["schema-registry"]["environment"]["SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS"] == (
        f"PLAINTEXT://{internal}")
    registry_port = services["schema-registry"]["ports"][0].split(":")[1]
    pg = services["postgres"]["environment"]
    assert services["metering"]["environment"]["CONSENTGATE_LEDGER_URL"] == (
        f"postgresql://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@postgres:5432/{pg['POSTGRES_DB']}")
    assert services["metering"]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    for name in ("topics", "gate", "metering"):
        env = services[name]["environment"]
        assert env["CONSENTGATE_BOOTSTRAP_SERVERS"] == internal
        assert env["CONSENTGATE_SCHEMA_REGISTRY_URL"] == f"http://schema-registry:{registry_port}"
        assert set(services[name]["depends_on"]) >= {"kafka", "schema-registry"}


def test_missing_java_or_maven_is_one_line_saying_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from consentgate.cluster import maven
    from consentgate.errors import ClusterError

    monkeypatch.setattr(maven.shutil, "which", lambda tool: None if tool == "mvn" else "/usr/bin/" + tool)
    with pytest.raises(ClusterError) as info:
        maven.require_tools()
    assert str(info.value) == "`mvn` not found on PATH: install Apache Maven (e.g. apt-get install maven)"
    monkeypatch.setattr(maven.shutil, "which", lambda tool: None)
    with pytest.raises(ClusterError, match=r"^`java` not found on PATH: install a Java 17\+ runtime"):
        maven.require_tools()
