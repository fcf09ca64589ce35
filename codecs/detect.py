"""Per-record detection of the input encoding, and the configured output encoding."""

from __future__ import annotations

from typing import Generic, Literal, TypeVar

from appfirst.codecs.avro import MAGIC as AVRO_MAGIC
from appfirst.codecs.avro import AvroSingleObjectCodec
from appfirst.codecs.confluent import MAGIC as CONFLUENT_MAGIC
from appfirst.codecs.confluent import ConfluentCodec, SchemaRegistry, schema_id_of
from appfirst.codecs.json_codec import JsonCodec
from appfirst.errors import DecodeError
from appfirst.topics.models import Event

E = TypeVar("E", bound=Event)
Encoding = Literal["json", "avro", "confluent"]

_JSON_START = frozenset(b" \t\r\n{")


def encoding_of(data: bytes) -> Encoding:
    if data[:2] == AVRO_MAGIC:
        return "avro"
    if data[:1] == CONFLUENT_MAGIC:
        return "confluent"
    if data[:1] and data[0] in _JSON_START:
        return "json"
    if data[:3] == b"\xef\xbb\xbf":  # a UTF-8 byte order mark before JSON
        return "json"
    raise DecodeError("unrecognised encoding (not JSON, Avro single-object or Confluent)")


class Decoder(Generic[E]):
    """Decodes one event type from any accepted encoding."""

    def __init__(self, model: type[E], registry: SchemaRegistry | None = None) -> None:
        self.model = model
        self.json = JsonCodec(model)
        self.avro = AvroSingleObjectCodec(model)
        self.confluent = ConfluentCodec(model, registry)

    async def prepare(self, data: bytes) -> None:
        """Fetch what decoding ``data`` needs from the network (a registry schema), once."""
        registry = self.confluent.registry
        if registry is not None and data[:1] == CONFLUENT_MAGIC and len(data) >= 5:
            await registry.fetch(schema_id_of(data))

    def decode(self, data: bytes | None) -> E:
        if not data:
            raise DecodeError("empty record (tombstone or null value)")
        kind = encoding_of(data)
        if kind == "json":
            return self.json.decode(data.removeprefix(b"\xef\xbb\xbf"))
        if kind == "avro":
            return self.avro.decode(data)
        return self.confluent.decode(data)


class Encoder(Generic[E]):
    """Encodes one event type with the output codec of the settings."""

    def __init__(self, model: type[E], codec: Literal["json", "avro"]) -> None:
        self._codec: JsonCodec[E] | AvroSingleObjectCodec[E] = (
            JsonCodec(model) if codec == "json" else AvroSingleObjectCodec(model)
        )

    def encode(self, event: E) -> bytes:
        return self._codec.encode(event)
