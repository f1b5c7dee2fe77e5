"""Confluent wire-format Avro codecs over confluent-kafka's schema-registry serdes (fastavro)."""

from __future__ import annotations

import io
import json
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fastavro
from confluent_kafka.schema_registry import (
    Schema,
    SchemaRegistryClient,
    SchemaRegistryError,
)
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from consentgate.schemas.contracts import schema_text
from consentgate.schemas.errors import (
    EncodeError,
    RecordError,
    RegistryUnavailable,
    SchemaMismatch,
    UndecodableRecord,
    UnknownSchemaId,
)
from consentgate.schemas.fastwrite import compile_writer
from consentgate.schemas.strict import StrictDecodeError, UnsupportedSchema, compile_checker

from consentgate.errors import ConfigurationError
from consentgate.security.properties import redact
from consentgate.settings import Settings

COMPATIBILITY = "BACKWARD"
_NOT_FOUND = (404, 422)
UNKNOWN_ID_RETRY_S = 60.0  # an unknown schema id is asked about again after this long
_FOREVER = float("inf")
_MAX_REFUSED = 10_000


@dataclass(frozen=True)
class _WriterSchema:
    schema: Any  # fastavro-parsed
    resolve: bool  # differs from the reader schema: resolve to it while reading
    check: Callable[[bytes, int], None]  # strict check of the encoding


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
        self._writers: dict[int, _WriterSchema] = {}
        self._refused: dict[int, tuple[float, type[RecordError], str]] = {}  # schema id -> (until, error, message)
        # `topics create` registers every contract; writers use the registered version, since
        # Apicurio's ccompat lookup does not match the serializer's re-rendered schema text.
        self._serializer = AvroSerializer(client, text, conf={"auto.register.schemas": False,
                                                              "use.latest.version": True})

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

    def registered(self, topic: str) -> tuple[dict[str, Any], bytes]:
        """The latest schema registered for ``topic``'s values (JSON form) and its Confluent header."""
        subject = f"{topic}-value"
        try:
            registered = self._client.get_latest_version(subject)
        except SchemaRegistryError as exc:
            if exc.http_status_code in _NOT_FOUND:
                raise EncodeError(f"no schema registered for {subject}: run `consentgate topics create`") from exc
            raise RegistryUnavailable(f"schema registry error for {subject}: {exc}") from exc
        schema_json = json.loads(registered.schema.schema_str or "null")
        return schema_json, b"\x00" + struct.pack(">I", registered.schema_id)

    def as_is_id(self, topic: str) -> int | None:
        """The id of ``topic``'s latest registered schema when it is the reader's own, else None."""
        try:
            _, header = self.registered(topic)
        except EncodeError:
            return None
        schema_id = int.from_bytes(header[1:5], "big")
        return schema_id if self.reads_natively(schema_id) else None

    def writer_for(self, topic: str) -> Callable[[dict[str, Any]], bytes]:
        """A fast encoder for ``topic``: the registered latest schema, framed as Confluent does."""
        schema_json, header = self.registered(topic)
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
        """Decode a Confluent-framed record strictly (see ``schemas.strict``), resolving older or newer
        writer schemas to this contract. Bad input raises a ``RecordError`` carrying the raw bytes and
        coordinates; only a registry outage raises ``RegistryUnavailable``."""
        coords = {"raw": data, "topic": topic, "partition": partition, "offset": offset}
        if len(data) < 5 or data[0] != 0:
            raise UndecodableRecord("not a Confluent-framed record (magic byte 0 and a 4-byte schema id)", **coords)
        schema_id = int.from_bytes(data[1:5], "big")
        writer = self._writers.get(schema_id) or self._writer(schema_id, coords)
        try:
            writer.check(data, 5)
            value = fastavro.schemaless_reader(io.BytesIO(data[5:]), writer.schema,
                                               self._reader_schema if writer.resolve else None,
                                               return_record_name=True)
        except StrictDecodeError as exc:
            raise UndecodableRecord(f"cannot decode as {self.contract}: {exc}", **coords) from exc
        except Exception as exc:
            if type(exc).__name__ == "SchemaResolutionError":
                message = (f"cannot decode as {self.contract}: SchemaResolutionError: writer schema "
                           f"{writer.schema.get('name')} (id {schema_id}) does not resolve to it")
                self._refuse(schema_id, SchemaMismatch, message, _FOREVER)
                raise SchemaMismatch(message, **coords) from exc
            raise UndecodableRecord(f"cannot decode as {self.contract}: {type(exc).__name__}: {_brief(exc)}",
                                    **coords) from exc
        if not isinstance(value, dict):
            raise SchemaMismatch(f"decoded {self.contract} is not a record", **coords)
        return value

    def reads_natively(self, schema_id: int) -> bool | None:
        """Whether records written with ``schema_id`` are in exactly this contract's schema, so a strict
        reader of the contract reads them as ``decode`` does (False for a schema that differs and for ids
        the registry refuses; None when the registry cannot be asked now)."""
        try:
            writer = self._writers.get(schema_id) or self._writer(
                schema_id, {"raw": b"", "topic": "", "partition": -1, "offset": -1})
        except RegistryUnavailable:
            return None
        except RecordError:
            return False
        return not writer.resolve

    def _writer(self, schema_id: int, coords: dict[str, Any]) -> _WriterSchema:
        """The writer schema of ``schema_id``, fetched once; ids the registry refused are remembered
        (unknown ones for a while, mismatched ones for good: a schema id's content never changes), so a
        stream of bad records costs no registry call each."""
        refused = self._refused.get(schema_id)
        if refused is not None and refused[0] > time.monotonic():
            raise refused[1](refused[2], **coords)
        try:
            registered = self._client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code in _NOT_FOUND:
                message = f"unknown schema id {schema_id} in record: {exc.error_message}"
                self._refuse(schema_id, UnknownSchemaId, message, UNKNOWN_ID_RETRY_S)
                raise UnknownSchemaId(message, **coords) from exc
            raise RegistryUnavailable(f"schema registry error: {exc}") from exc
        except Exception as exc:
            if _is_transport_error(exc):
                raise RegistryUnavailable(f"schema registry unreachable: {exc}") from exc
            raise
        try:
            if (registered.schema_type or "AVRO") != "AVRO":
                raise UnsupportedSchema(f"a {registered.schema_type} schema, not Avro")
            schema_json = json.loads(registered.schema_str or "null")
            parsed = fastavro.parse_schema(schema_json)
            if not isinstance(parsed, dict) or parsed.get("type") != "record":
                raise UnsupportedSchema("not an Avro record schema")
            check = compile_checker(schema_json)
        except Exception as exc:
            message = f"schema id {schema_id} cannot be read as {self.contract}: {_brief(exc)}"
            self._refuse(schema_id, SchemaMismatch, message, _FOREVER)
            raise SchemaMismatch(message, **coords) from exc
        same = parsed.get("name") == self._reader_schema.get("name") and json.dumps(
            parsed, sort_keys=True, default=str) == json.dumps(self._reader_schema, sort_keys=True, default=str)
        writer = self._writers[schema_id] = _WriterSchema(parsed, not same, check)
        return writer

    def _refuse(self, schema_id: int, kind: type[RecordError], message: str, seconds: float) -> None:
        if len(self._refused) >= _MAX_REFUSED:
            self._refused.clear()
        self._refused[schema_id] = (time.monotonic() + seconds, kind, message)


def _brief(exc: BaseException) -> str:
    detail = str(exc)
    return detail if len(detail) <= 300 else detail[:300] + "..."


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
