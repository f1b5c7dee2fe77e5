"""Client security settings, secret handling and the ACL set: pure, no broker."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from consentgate.connectors.kafka import producer
from consentgate.schemas.codec import registry_client
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from consentgate.catalog import load_catalog
from consentgate.errors import ConfigurationError
from consentgate.pseudonyms import key_id
from consentgate.security import properties, tls
from consentgate.security.acls import Acl, acl_set, parse_principals, role_grants, roles
from consentgate.settings import Settings, redact_url

GOOD_SECRET = "a-pseudonym-secret-of-32-bytes!!"


def _file(tmp_path: Path, text: str, name: str = "client.properties") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_properties_parse_java_syntax() -> None:
    text = ("# comment\n! also a comment\n\nsecurity.protocol = SASL_SSL\nsasl.mechanism:SCRAM-SHA-512\n"
            "sasl.username alice\nlong.value=one,\\\n    two\nescaped\\=key=a\\tb\\\\c\nempty=\n")
    assert properties.parse(text) == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "alice",
        "long.value": "one,two", "escaped=key": "a\tb\\c", "empty": ""}


def test_properties_render_reads_back_exactly() -> None:
    entries = {"a.b": "x=y:z", "weird key": "tab\there\\back", "ssl.ca.location": "/tmp/ca.pem"}
    assert properties.parse(properties.render(entries, header="line one\nline two")) == entries


def test_kafka_config_is_merged_and_cannot_override_what_workers_rely_on(tmp_path: Path) -> None:
    path = _file(tmp_path, "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\nsasl.username=gate\n"
                           "sasl.password=hunter2-very-secret\nssl.ca.location=/etc/ca.pem\n")
    settings = Settings(bootstrap_servers="k:9093", kafka_config=path)
    assert settings.librdkafka("consumer", **{"group.id": "g"}) == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "gate",
        "sasl.password": "hunter2-very-secret", "ssl.ca.location": "/etc/ca.pem", "bootstrap.servers": "k:9093",
        "enable.auto.commit": False, "isolation.level": "read_committed", "auto.offset.reset": "earliest",
        "fetch.queue.backoff.ms": 10, "enable.partition.eof": False, "group.id": "g"}
    assert settings.librdkafka("admin") == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "gate",
        "sasl.password": "hunter2-very-secret", "ssl.ca.location": "/etc/ca.pem", "bootstrap.servers": "k:9093"}
    assert "hunter2" not in repr(settings)


@pytest.mark.parametrize(("text", "named"), [
    ("isolation.level=read_uncommitted\n", "isolation.level cannot be set"),
    ("enable.idempotence=false\nsasl.username=x\n", "enable.idempotence cannot be set"),
    ("transactional.id=mine\nacks=1\n", "acks, transactional.id cannot be set"),
    ("bootstrap.servers=elsewhere:9092\n", "bootstrap.servers cannot be set"),
])
def test_kafka_config_refuses_reserved_keys(tmp_path: Path, text: str, named: str) -> None:
    path = _file(tmp_path, text)
    with pytest.raises(ConfigurationError) as info:
        Settings(bootstrap_servers="k:1", kafka_config=path).librdkafka("producer")
    assert str(info.value).startswith(f"{path}: {named} in the Kafka client config: consentgate sets")


def test_java_jaas_config_becomes_librdkafka_username_and_password(tmp_path: Path) -> None:
    path = _file(tmp_path, 'security.protocol=SASL_SSL\nsasl.jaas.config=org.apache.kafka.common.security.scram.'
                           'ScramLoginModule required username="svc-gate" password="p@ss=w\\\\\\"rd";\n')
    assert properties.kafka_client_conf(path) == {"security.protocol": "SASL_SSL", "sasl.username": "svc-gate",
                                                  "sasl.password": 'p@ss=w"rd'}
    bad = _file(tmp_path, "sasl.jaas.config=org.Module required;\n", "bad.properties")
    with pytest.raises(ConfigurationError, match="sasl.jaas.config must name a username and a password"):
        properties.kafka_client_conf(bad)


def test_an_unknown_kafka_setting_names_the_file_and_never_a_secret(tmp_path: Path) -> None:
    path = _file(tmp_path, "sasl.password=hunter2-very-secret\nssl.truststore.location=/x.jks\n")
    with pytest.raises(ConfigurationError) as info:
        producer(Settings(bootstrap_servers="127.0.0.1:1", kafka_config=path))
    assert str(info.value) == (f"invalid Kafka client setting (from {path}): Java TrustStores are not supported, "
                               "use `ssl.ca.location` and a certificate file instead. See "
                               "https://github.com/confluentinc/librdkafka/wiki/Using-SSL-with-librdkafka for more "
                               "information.")
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=f"cannot read the Kafka client config file {tmp_path}/nope"):
        Settings(data_dir=tmp_path, bootstrap_servers="k:1", kafka_config=tmp_path / "nope").resolved()


def test_registry_config_reaches_the_registry_client(tmp_path: Path) -> None:
    ca = tls.ensure(tmp_path / "tls").ca
    path = _file(tmp_path, "basic.auth.user.info=svc:hunter2-pw\n"
                           f"ssl.ca.location={ca}\n")
    settings = Settings(schema_registry_url="https://registry:8081", schema_registry_config=path)
    assert settings.registry_conf() == {"url": "https://registry:8081",
                                        "basic.auth.user.info": "svc:hunter2-pw", "ssl.ca.location": str(ca)}
    client = registry_client(settings)
    client.close()
    missing_ca = _file(tmp_path, "basic.auth.user.info=svc:hunter2-pw\nssl.ca.location=/nonexistent/ca.pem\n",
                       "missing.properties")
    with pytest.raises(ConfigurationError) as info:
        registry_client(Settings(schema_registry_url="https://r", schema_registry_config=missing_ca))
    assert str(info.value) == (f"invalid schema registry client setting (from {missing_ca}): "
                               "[Errno 2] No such file or directory")
    _file(tmp_path, "url=http://elsewhere\n")
    with pytest.raises(ConfigurationError, match="url cannot be set in the schema registry client config"):
        settings.registry_conf()
    bad = _file(tmp_path, "basic.auth.user.info=svc:hunter2-pw\nno.such.key=1\n", "bad.properties")
    with pytest.raises(ConfigurationError) as info:
        registry_client(Settings(schema_registry_url="http://r", schema_registry_config=bad))
    assert str(info.value).startswith(f"invalid schema registry client setting (from {bad}): ")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql+psycopg://pay:hunter2@db:5432/ledger", "postgresql+psycopg://pay:***@db:5432/ledger"),
    ("postgresql://pay@db/ledger", "postgresql://pay@db/ledger"),
    ("sqlite:////var/lib/consentgate/ledger.db", "sqlite:////var/lib/consentgate/ledger.db"),
    ("not a url://u:hunter2@h", "not a url://u:***@h"),
])
def test_ledger_url_is_redacted_wherever_printed(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    settings = Settings(ledger_url=url)
    assert settings.redacted_ledger() == shown
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings)


def test_short_pseudonym_secret_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="the pseudonym secret is 31 bytes; at least 32 are required"):
        Settings(pseudonym_secret="x" * 31).require_secret()  # type: ignore[arg-type]
    assert Settings(pseudonym_secret=GOOD_SECRET).require_secret() == GOOD_SECRET.encode()  # type: ignore[arg-type]


def test_a_secret_that_differs_from_the_data_dirs_is_refused_naming_key_ids(tmp_path: Path) -> None:
    recorded = "the-data-dirs-own-secret-32bytes!"
    (tmp_path / "pseudonym.secret").write_text(recorded)
    (tmp_path / "pseudonym.secret").chmod(0o600)
    with pytest.raises(ConfigurationError) as info:
        Settings(data_dir=tmp_path, pseudonym_secret=GOOD_SECRET).resolved()  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith(f"the pseudonym secret given (key id {key_id(GOOD_SECRET.encode())}) differs from "
                              f"the one in {tmp_path / 'pseudonym.secret'} (key id {key_id(recorded.encode())})")
    assert GOOD_SECRET not in message and recorded not in message
    same = Settings(data_dir=tmp_path, pseudonym_secret=recorded).resolved()  # type: ignore[arg-type]
    assert same.require_secret() == recorded.encode()
    (tmp_path / "pseudonym.secret").chmod(0o644)
    with pytest.raises(ConfigurationError, match=r"pseudonym.secret is readable by others \(mode 0644\)"):
        Settings(data_dir=tmp_path).resolved()


def test_a_secure_cluster_needs_a_client_config(tmp_path: Path) -> None:
    (tmp_path / "cluster.json").write_text(json.dumps({"bootstrap_servers": "127.0.0.1:1", "secure": True,
                                                       "schema_registry_url": "http://r", "processes": []}))
    with pytest.raises(ConfigurationError, match=f"the cluster in {tmp_path} is secure: pass --kafka-config "
                                                 f"{tmp_path}/clients/<role>.properties"):
        Settings(data_dir=tmp_path).resolved()
    config = _file(tmp_path, "security.protocol=SASL_SSL\n", "gate.properties")
    assert Settings(data_dir=tmp_path, kafka_config=config).resolved().bootstrap_servers == "127.0.0.1:1"


def test_metrics_bind_to_loopback_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().metrics_host == "127.0.0.1"
    monkeypatch.setenv("CONSENTGATE_METRICS_HOST", "0.0.0.0")
    assert Settings().metrics_host == "0.0.0.0"


def test_acl_set_per_role_is_exact() -> None:
    settings = Settings(topic_prefix="p.", group_id="gates", transactional_id_prefix="gtx", metering_group_id="mg")
    catalog = load_catalog()
    gen = "p.training.train_ai_system.generative"
    sinks = ["p.training.train_ai_system.recommendation", gen, "p.training.train_ai_system.ads_ranking"]
    assert roles(catalog) == ["admin", "platform", "consent", "gate", "metering", "auditor",
                              "trainer.train_ai_system.ads_ranking", "trainer.train_ai_system.generative",
                              "trainer.train_ai_system.recommendation"]
    assert role_grants("platform", settings, catalog) == [("topic", "p.activity.events", "literal", "write")]
    assert role_grants("consent", settings, catalog) == [
        ("topic", "p.consent.state", "literal", "read"), ("topic", "p.consent.changes", "literal", "read"),
        ("topic", "p.consent.state", "literal", "write"),
        ("topic", "p.consent.changes", "literal", "write"), ("topic", "p.training.retractions", "literal", "write"),
        ("transactional_id", "p.consent-writer-", "prefixed", "write"),
        ("group", "consent-writer-", "prefixed", "read"), ("group", "consent-service-", "prefixed", "read")]
    assert role_grants("gate", settings, catalog) == [
        ("topic", "p.activity.events", "literal", "read"), ("topic", "p.consent.state", "literal", "read"),
        ("topic", "p.gate.decisions", "literal", "write"), ("topic", "p.gate.dlq", "literal", "write"),
        ("topic", "p.metering.contributions", "literal", "write"),
        *[("topic", s, "literal", "write") for s in sinks],
        ("group", "gates", "literal", "read"), ("group", "consent-view-", "prefixed", "read"),
        ("transactional_id", "gtx-", "prefixed", "write")]
    assert role_grants("metering", settings, catalog) == [
        ("topic", "p.metering.contributions", "literal", "read"), *[("topic", s, "literal", "read") for s in sinks],
        ("topic", "p.metering.dlq", "literal", "write"), ("group", "mg", "literal", "read"),
        ("group", "consentgate-value-", "prefixed", "read")]
    assert role_grants("auditor", settings, catalog) == [
        ("topic", "p.consent.changes", "literal", "read"), ("topic", "p.gate.decisions", "literal", "read"),
        ("topic", "p.gate.dlq", "literal", "read"), ("topic", "p.metering.contributions", "literal", "read"),
        ("topic", "p.training.", "prefixed", "read"), ("topic", "p.activity.events", "literal", "describe"),
        ("group", "consentgate-audit-", "prefixed", "read"), ("group", "consentgate-tail-", "prefixed", "read")]
    assert role_grants("trainer.train_ai_system.generative", settings, catalog) == [
        ("topic", gen, "literal", "read"), ("topic", "p.training.retractions", "literal", "read"),
        ("group", "consentgate-sink-", "prefixed", "read"), ("group", "consentgate-tail-", "prefixed", "read")]
    assert role_grants("admin", settings, catalog) == [
        ("cluster", "kafka-cluster", "literal", "all"), ("topic", "p.", "prefixed", "all"),
        ("group", "*", "literal", "all"), ("transactional_id", "*", "literal", "all")]
    assert role_grants("admin", Settings(), catalog)[1] == ("topic", "*", "literal", "all")
    with pytest.raises(ConfigurationError, match="unknown role 'trainer.nope'"):
        role_grants("trainer.nope", settings, catalog)


def test_acl_set_uses_named_principals() -> None:
    catalog = load_catalog()
    named = parse_principals(["gate=User:svc-gate", "trainer.train_ai_system.generative=User:ml"], catalog)
    acls = acl_set(Settings(topic_prefix="p."), catalog, named)
    assert {a.principal for a in acls} == {"User:admin", "User:platform", "User:consent", "User:svc-gate",
                                           "User:metering", "User:auditor", "User:ml",
                                           "User:trainer.train_ai_system.ads_ranking",
                                           "User:trainer.train_ai_system.recommendation"}
    assert Acl("User:ml", "topic", "p.training.retractions", "literal", "read") in acls
    per_role = [len(role_grants(r, Settings(topic_prefix="p."), catalog)) for r in roles(catalog)]
    assert len(acls) == sum(per_role) == 51
    for bad, message in (("gate", "expected ROLE=Type:name"), ("gate=svc", "expected ROLE=Type:name"),
                         ("root=User:x", "unknown role 'root'")):
        with pytest.raises(ConfigurationError, match=message):
            parse_principals([bad], catalog)


def test_tls_material_verifies_and_names_loopback(tmp_path: Path) -> None:
    files = tls.ensure(tmp_path / "tls", datetime(2026, 11, 28, tzinfo=timezone.utc))
    ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    chain = x509.load_pem_x509_certificates(files.keystore.read_bytes())
    broker = chain[0]
    broker.verify_directly_issued_by(ca)
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    san = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert files.keystore.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert files.keystore.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "tls").stat().st_mode & 0o777 == 0o700
    before = files.keystore.read_bytes()
    assert tls.ensure(tmp_path / "tls").keystore.read_bytes() == before  # kept, not re-issued
