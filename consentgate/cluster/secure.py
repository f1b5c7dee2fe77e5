"""What ``consentgate up --secure`` adds to the embedded broker: TLS, SCRAM users, ACLs, client files.

The client listener speaks SASL_SSL only (SCRAM-SHA-512, a certificate from a local CA); the
controller listener SASL_SSL with PLAIN for the broker's own principal. The KRaft StandardAuthorizer
denies whatever no ACL allows; the broker's principal ``broker`` is the only super user and its
credentials never leave ``<data dir>/kafka``. Each role of SPEC §7 gets a SCRAM user, exactly its
ACLs (``security.acls``) and ``<data dir>/clients/<role>.properties`` (0600).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialUpsertion,
)

from consentgate.catalog import Catalog
from consentgate.errors import ClusterError
from consentgate.security import properties, tls
from consentgate.security.acls import Acl, acl_set, roles
from consentgate.settings import Settings

BROKER = "broker"
MECHANISM = "SCRAM-SHA-512"
ITERATIONS = 8192
CLIENTS_DIR = "clients"

_LISTENERS = """listeners=SASL_SSL://127.0.0.1:{bport},CONTROLLER://127.0.0.1:{cport}
advertised.listeners=SASL_SSL://127.0.0.1:{bport}
inter.broker.listener.name=SASL_SSL
controller.listener.names=CONTROLLER
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SASL_SSL
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
sasl.mechanism.controller.protocol=PLAIN
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule \
required username="broker" password="{scram}";
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule \
required username="broker" password="{plain}" user_broker="{plain}";
ssl.keystore.type=PEM
ssl.keystore.location={keystore}
ssl.truststore.type=PEM
ssl.truststore.location={ca}
ssl.client.auth=none
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:broker
"""


@dataclass(frozen=True)
class BrokerSecrets:
    """The broker's own passwords (SCRAM between broker and itself, PLAIN towards the controller)."""

    scram: str
    plain: str

    def __repr__(self) -> str:
        return "BrokerSecrets(***)"


def _password() -> str:
    return secrets.token_hex(24)  # hex: safe inside JAAS quotes and properties files


def broker_secrets(data_dir: Path) -> BrokerSecrets:
    """The broker's passwords, made once and kept in ``<data dir>/kafka/broker-secrets.json`` (0600)."""
    path = data_dir / "kafka" / "broker-secrets.json"
    if path.exists():
        raw = json.loads(path.read_text())
        return BrokerSecrets(raw["scram"], raw["plain"])
    made = BrokerSecrets(_password(), _password())
    tls.write_private(path, json.dumps({"scram": made.scram, "plain": made.plain}).encode())
    return made


def listener_properties(data_dir: Path, ports: dict[str, int], broker: BrokerSecrets) -> str:
    files = tls.ensure(data_dir / "tls")
    return _LISTENERS.format(bport=ports["broker"], cport=ports["controller"], scram=broker.scram,
                             plain=broker.plain, keystore=files.keystore, ca=files.ca)


def format_arguments(broker: BrokerSecrets) -> list[str]:
    """``kafka-storage format`` arguments creating the broker's SCRAM user before the first start."""
    return ["--add-scram", f"{MECHANISM}=[name={BROKER},password={broker.scram}]"]


def client_conf(data_dir: Path, username: str, password: str) -> dict[str, str]:
    return {"security.protocol": "SASL_SSL", "sasl.mechanism": MECHANISM, "sasl.username": username,
            "sasl.password": password, "ssl.ca.location": str(data_dir / "tls" / "ca.pem")}


def broker_conf(data_dir: Path, bootstrap: str) -> dict[str, Any]:
    """librdkafka settings of the broker's own (super user) principal, for setting up users and ACLs."""
    return {"bootstrap.servers": bootstrap, **client_conf(data_dir, BROKER, broker_secrets(data_dir).scram)}


def clients_dir(data_dir: Path) -> Path:
    return data_dir / CLIENTS_DIR


def role_passwords(data_dir: Path, catalog: Catalog) -> dict[str, str]:
    """Each role's password: the one in its client file, or a new one (files written by ``write_clients``)."""
    out: dict[str, str] = {}
    for role in roles(catalog):
        path = clients_dir(data_dir) / f"{role}.properties"
        existing = properties.read(path, "client config").get("sasl.password") if path.exists() else None
        out[role] = existing or _password()
    return out


def write_clients(data_dir: Path, passwords: dict[str, str]) -> list[Path]:
    directory = clients_dir(data_dir)
    directory.mkdir(mode=0o700, exist_ok=True)
    written = []
    for role, password in passwords.items():
        path = directory / f"{role}.properties"
        text = properties.render(client_conf(data_dir, role, password),
                                 header=f"consentgate role {role}: use with --kafka-config {path}")
        tls.write_private(path, text.encode())
        written.append(path)
    return written


_RESOURCE = {"cluster": ResourceType.BROKER, "topic": ResourceType.TOPIC, "group": ResourceType.GROUP,
             "transactional_id": ResourceType.TRANSACTIONAL_ID}
_PATTERN = {"literal": ResourcePatternType.LITERAL, "prefixed": ResourcePatternType.PREFIXED}
_OPERATION = {"all": AclOperation.ALL, "read": AclOperation.READ, "write": AclOperation.WRITE,
              "describe": AclOperation.DESCRIBE, "create": AclOperation.CREATE, "alter": AclOperation.ALTER}


def binding(acl: Acl) -> AclBinding:
    return AclBinding(_RESOURCE[acl.resource], acl.name, _PATTERN[acl.pattern], acl.principal, "*",
                      _OPERATION[acl.operation], AclPermissionType.ALLOW)


def create_acls(client: AdminClient, acls: list[Acl], timeout: float = 30.0) -> None:
    """Create ``acls`` (creating an existing binding again is a no-op)."""
    if not acls:
        return
    for acl_binding, future in client.create_acls([binding(a) for a in acls], request_timeout=timeout).items():
        try:
            future.result()
        except KafkaException as exc:
            raise ClusterError(f"creating ACL {acl_binding} failed: {exc.args[0].str()}") from exc


def upsert_users(client: AdminClient, passwords: dict[str, str], timeout: float = 30.0) -> None:
    """Create or update one SCRAM-SHA-512 user per role."""
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, ITERATIONS)
    changes: list[UserScramCredentialAlteration] = [
        UserScramCredentialUpsertion(role, info, password.encode()) for role, password in passwords.items()]
    for user, future in client.alter_user_scram_credentials(changes, request_timeout=timeout).items():
        try:
            future.result()
        except KafkaException as exc:
            # The error names the user only; the password is never part of it.
            raise ClusterError(f"creating SCRAM user {user} failed: {exc.args[0].str()}") from exc


def provision(settings: Settings, catalog: Catalog, bootstrap: str) -> list[Path]:
    """Users, ACLs and client files for every role; idempotent, so a restart of ``up`` repeats it."""
    passwords = role_passwords(settings.data_dir, catalog)
    client = AdminClient({**broker_conf(settings.data_dir, bootstrap), "log_level": 0})
    upsert_users(client, passwords)
    create_acls(client, acl_set(settings, catalog))
    return write_clients(settings.data_dir, passwords)
