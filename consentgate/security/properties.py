"""Java-style ``.properties`` files for Kafka and schema-registry clients. Pure apart from reading the file.

Platforms hand out client settings as Java properties (``security.protocol=SASL_SSL``, ``sasl.*``,
``ssl.*``). consentgate reads the same file for librdkafka: keys librdkafka does not know are refused
by librdkafka itself when a client starts, a Java ``sasl.jaas.config`` with a username and password is
translated into librdkafka's ``sasl.username`` / ``sasl.password``, and keys the workers rely on for
correctness (exactly-once, read_committed) are refused here with a clear error.
"""

from __future__ import annotations

import re
from pathlib import Path

from consentgate.errors import ConfigurationError

# Keys whose values are never printed (librdkafka, Java and schema-registry client spellings).
SECRET_KEYS = frozenset({
    "sasl.password", "sasl.jaas.config", "ssl.key.password", "ssl.keystore.password",
    "ssl.truststore.password", "ssl.key.pem", "ssl_key", "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.config", "basic.auth.user.info", "bearer.auth.token",
    "bearer.auth.client.secret",
})

# What the workers set themselves and depend on: exactly-once, read_committed, the offsets they commit
# in the same transaction as their outputs. A file that changed any of them would silently break
# the guarantees, so it is refused instead.
RESERVED_KAFKA_KEYS = frozenset({
    "bootstrap.servers", "isolation.level", "enable.idempotence", "transactional.id",
    "transaction.timeout.ms", "enable.auto.commit", "enable.auto.offset.store", "auto.offset.reset",
    "acks", "group.id", "group.instance.id", "partitioner", "enable.partition.eof",
    "session.timeout.ms", "max.in.flight.requests.per.connection", "message.max.bytes",
})

# The schema-registry client's own keys that consentgate sets (the URL comes from its own setting).
RESERVED_REGISTRY_KEYS = frozenset({"url"})

_JAAS = re.compile(r'(\w+)\s*=\s*"((?:[^"\\]|\\.)*)"')


def parse(text: str, source: str = "properties") -> dict[str, str]:
    """Parse Java properties text: ``key=value``, ``key: value`` or ``key value``; ``#``/``!`` comments;
    a trailing backslash continues a line; ``\\t``, ``\\n``, ``\\=``, ``\\:`` and ``\\\\`` escapes."""
    out: dict[str, str] = {}
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.lstrip()  # leading blanks are dropped, continuation lines included
        if not pending and (not line or line[0] in "#!"):
            continue
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2 == 1:  # an odd number of backslashes: the line continues
            pending += line[:-1]
            continue
        logical.append(pending + line)
        pending = ""
    if pending:
        logical.append(pending)
    for number, line in enumerate(logical, start=1):
        key, value = _split(line)
        if not key:
            raise ConfigurationError(f"{source}: entry {number} has no key")
        out[key] = value
    return out


def _split(line: str) -> tuple[str, str]:
    i = 0
    key: list[str] = []
    while i < len(line):
        ch = line[i]
        if ch == "\\" and i + 1 < len(line):
            key.append(_unescape(line[i + 1]))
            i += 2
            continue
        if ch in "=: \t":
            break
        key.append(ch)
        i += 1
    rest = line[i:].lstrip(" \t")
    if rest[:1] in ("=", ":"):
        rest = rest[1:].lstrip(" \t")
    value: list[str] = []
    j = 0
    while j < len(rest):
        if rest[j] == "\\" and j + 1 < len(rest):
            value.append(_unescape(rest[j + 1]))
            j += 2
            continue
        value.append(rest[j])
        j += 1
    return "".join(key), "".join(value).rstrip()


def _unescape(ch: str) -> str:
    return {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}.get(ch, ch)


def render(entries: dict[str, str], header: str = "") -> str:
    """Properties text that :func:`parse` reads back exactly (used for the files ``up --secure`` writes)."""
    def esc(text: str, is_key: bool) -> str:
        out = text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")
        if is_key:
            out = out.replace("=", "\\=").replace(":", "\\:").replace(" ", "\\ ")
        return out

    lines = [f"# {line}" for line in header.splitlines()]
    lines += [f"{esc(k, True)}={esc(v, False)}" for k, v in entries.items()]
    return "\n".join(lines) + "\n"


def read(path: Path, what: str) -> dict[str, str]:
    """Read a properties file, naming it (never its values) when it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read the {what} file {path}: {exc.strerror}") from exc
    return parse(text, str(path))


def kafka_client_conf(path: Path) -> dict[str, str]:
    """librdkafka settings from a properties file: reserved keys refused, Java JAAS translated."""
    entries = read(path, "Kafka client config")
    reserved = sorted(k for k in entries if k in RESERVED_KAFKA_KEYS)
    if reserved:
        raise ConfigurationError(
            f"{path}: {', '.join(reserved)} cannot be set in the Kafka client config: consentgate sets "
            f"{'it' if len(reserved) == 1 else 'them'} itself (exactly-once and read_committed depend on "
            f"{'it' if len(reserved) == 1 else 'them'}; the address comes from --bootstrap-servers)")
    jaas = entries.pop("sasl.jaas.config", None)
    if jaas is not None:
        found = dict(_JAAS.findall(jaas))
        if "username" not in found or "password" not in found:
            raise ConfigurationError(f"{path}: sasl.jaas.config must name a username and a password "
                                     "(or use sasl.username and sasl.password)")
        entries.setdefault("sasl.username", found["username"].replace('\\"', '"'))
        entries.setdefault("sasl.password", found["password"].replace('\\"', '"'))
    return entries


def registry_client_conf(path: Path) -> dict[str, str]:
    """Schema-registry client settings (``basic.auth.user.info``, ``ssl.ca.location``, ...)."""
    entries = read(path, "schema registry client config")
    if "url" in entries:
        raise ConfigurationError(f"{path}: url cannot be set in the schema registry client config: "
                                 "use --schema-registry-url (CONSENTGATE_SCHEMA_REGISTRY_URL)")
    return entries


def redact(message: str, conf: dict[str, object]) -> str:
    """``message`` with the value of every secret key of ``conf`` replaced by ``***``."""
    for key, value in conf.items():
        if key in SECRET_KEYS and isinstance(value, str) and value:
            message = message.replace(value, "***")
    return message
