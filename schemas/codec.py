"""Confluent wire-format Avro codecs over confluent-kafka's schema-registry serdes (fastavro)."""

from __future__ import annotations

from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, SchemaRegistryError
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

COMPATIBILITY = "BACKWARD"
_NOT_FOUND = (404, 422)


def registry_client(url: str) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": url})


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
        text = schema_text(contract)
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

    def decode(self, data: bytes, topic: str, partition: int = -1, offset: int = -1) -> dict[str, Any]:
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
