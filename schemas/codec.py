"""Confluent wire-format Avro codecs over confluent-kafka's schema-registry serdes (fastavro)."""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable
from typing import Any

import fastavro
from confluent_kafka.schema_registry import (
    Schema,
    SchemaRegistryClient,
    SchemaRegistryError,
)
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from consentgate.schemas.contracts import schema_text
from consentgate.schemas.errors import (
    EncodeError,
    RegistryUnavailable,
    SchemaMismatch,
    UndecodableRecord,
    UnknownSchemaId,
)
from consentgate.schemas.fastwrite import compile_writer

from consentgate.errors import ConfigurationError
from consentgate.security.properties import redact
from consentgate.settings import Settings

COMPATIBILITY = "BACKWARD"
_NOT_FOUND = (404, 422)


def registry_client(settings: Settings) -> SchemaRegistryClient:
    """A registry client with the URL and the ``--schema-registry-config`` settings (auth, TLS)."""
    conf = settings.registry_conf()
    try:
        return SchemaRegistryClient(conf)
    except (ValueError, TypeError, OSError) as exc:  # OSError: a TLS file it names cannot be read
        origin = f" (from {settings.schema_registry_config})" if settings.schema_registry_config else ""
        # Not chained: the client's message can quote a value, and a traceback would print it unredacted.
        raise ConfigurationError(f"invalid schema registry client setting{origin}: "
                                 f"{redact(str(exc), dict(conf))}") from None


def register(client: SchemaRegistryClient, topic: str, contract: str) -> int:
    """Register ``contract`` as the value schema of ``topic`` under BACKWARD compatibility."""
    subject = f"{topic}-value"
    try:
        client.set_compatibility(subject_name=subject, level=COMPATIBILITY)
        return int(client.register_schema(subject, Schema(schema_text(contract), "AVRO")))
    except SchemaRegistryError as exc:
        raise RegistryUnavailable(f"registering {contract} for {subject} failed: {exc}") from exc


def _is_transport_error(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] in {"httpx", "httpcore", "requests", "urllib3"} or isinstance(
        exc, (ConnectionError, TimeoutError))


class Codec:
    """Encodes and decodes one contract; a decoder reads any compatible writer schema."""

    def __init__(self, client: SchemaRegistryClient, contract: str) -> None:
        self.contract = contract
        self._client = client
        text = schema_text(contract)
        self._reader_schema: dict[str, Any] = fastavro.parse_schema(json.loads(text))  # type: ignore[assignment]
        self._writers: dict[int, Any] = {}  # schema id -> parsed writer schema (None: same as reader)
        # `topics create` registers every contract; writers use the registered version, since
        # Apicurio's ccompat lookup does not match the serializer's re-rendered schema text.
        self._serializer = AvroSerializer(client, text, conf={"auto.register.schemas": False,
                                                              "use.latest.version": True})
        self._deserializer = AvroDeserializer(client, text, return_record_name=True)

    def encode(self, topic: str, value: dict[str, Any]) -> bytes:
        try:
            data = self._serializer(value, SerializationContext(topic, MessageField.VALUE))
        except SchemaRegistryError as exc:
            if exc.http_status_code in _NOT_FOUND:
                raise EncodeError(f"{self.contract} is not registered for topic {topic}: run "
                                  f"`consentgate topics create` ({exc})") from exc
            raise RegistryUnavailable(f"schema registry error for {topic}: {exc}") from exc
        except Exception as exc:
            if _is_transport_error(exc):
                raise RegistryUnavailable(f"schema registry unreachable: {exc}") from exc
            raise EncodeError(f"value does not fit {self.contract}: {exc}") from exc
        assert data is not None
        return data

    def writer_for(self, topic: str) -> Callable[[dict[str, Any]], bytes]:
        """A fast encoder for ``topic``: the registered latest schema, framed as Confluent does."""
        subject = f"{topic}-value"
        try:
            registered = self._client.get_latest_version(subject)
        except SchemaRegistryError as exc:
            if exc.http_status_code in _NOT_FOUND:
                raise EncodeError(f"no schema registered for {subject}: run `consentgate topics create`") from exc
            raise RegistryUnavailable(f"schema registry error for {subject}: {exc}") from exc
        schema_json = json.loads(registered.schema.schema_str or "null")
        header = b"\x00" + struct.pack(">I", registered.schema_id)
        compiled = compile_writer(schema_json, header)
        if compiled is not None:
            def encode_compiled(value: dict[str, Any]) -> bytes:
                try:
                    return compiled(value)
                except (KeyError, TypeError, ValueError, AttributeError) as exc:
                    raise EncodeError(f"value does not fit {self.contract} on {topic}: {exc!r}") from exc

            return encode_compiled
        schema = fastavro.parse_schema(schema_json)
        write = fastavro.schemaless_writer

        def encode(value: dict[str, Any]) -> bytes:
            out = io.BytesIO()
            out.write(header)
            try:
                write(out, schema, value)
            except Exception as exc:
                raise EncodeError(f"value does not fit {self.contract} on {topic}: {exc}") from exc
            return out.getvalue()

        return encode

    def decode(self, data: bytes, topic: str, partition: int = -1, offset: int = -1) -> dict[str, Any]:
        """Decode a Confluent-framed record; known schema ids take the fast path."""
        if len(data) > 5 and data[0] == 0:
            schema_id = int.from_bytes(data[1:5], "big")
            if schema_id in self._writers:
                writer = self._writers[schema_id]
                try:
                    value = fastavro.schemaless_reader(io.BytesIO(data[5:]), writer or self._reader_schema,
                                                       self._reader_schema if writer else None,
                                                       return_record_name=True)
                except Exception as exc:
                    raise UndecodableRecord(f"cannot decode as {self.contract}: {type(exc).__name__}: "
                                            f"{str(exc)[:300]}", raw=data, topic=topic, partition=partition,
                                            offset=offset) from exc
                if isinstance(value, dict):
                    return value
        value = self._slow_decode(data, topic, partition, offset)
        self._learn(data)
        return value

    def _learn(self, data: bytes) -> None:
        schema_id = int.from_bytes(data[1:5], "big")
        schema: dict[str, Any] = fastavro.parse_schema(  # type: ignore[assignment]
            json.loads(self._client.get_schema(schema_id).schema_str or "null"))
        same = schema.get("name") == self._reader_schema.get("name") and json.dumps(
            schema, sort_keys=True, default=str) == json.dumps(self._reader_schema, sort_keys=True, default=str)
        self._writers[schema_id] = None if same else schema

    def _slow_decode(self, data: bytes, topic: str, partition: int, offset: int) -> dict[str, Any]:
        coords = {"raw": data, "topic": topic, "partition": partition, "offset": offset}
        try:
            value = self._deserializer(data, SerializationContext(topic, MessageField.VALUE))
        except SchemaRegistryError as exc:
            if exc.http_status_code in _NOT_FOUND:
                raise UnknownSchemaId(f"unknown schema id in record: {exc.error_message}", **coords) from exc
            raise RegistryUnavailable(f"schema registry error: {exc}") from exc
        except Exception as exc:
            if _is_transport_error(exc):
                raise RegistryUnavailable(f"schema registry unreachable: {exc}") from exc
            kind = SchemaMismatch if "Schema" in type(exc).__name__ else UndecodableRecord
            detail = str(exc)
            if len(detail) > 300:
                detail = detail[:300] + "..."
            raise kind(f"cannot decode as {self.contract}: {type(exc).__name__}: {detail}", **coords) from exc
        if not isinstance(value, dict):
            raise UndecodableRecord(f"decoded {self.contract} is not a record", **coords)
        return value


class Codecs:
    """One codec per contract, sharing one registry client."""

    def __init__(self, client: SchemaRegistryClient) -> None:
        self.client = client
        self._codecs: dict[str, Codec] = {}

    def __getitem__(self, contract: str) -> Codec:
        codec = self._codecs.get(contract)
        if codec is None:
            codec = self._codecs[contract] = Codec(self.client, contract)
        return codec
