"""Decoding input and encoding output for agents, with the dead-letter path."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar, cast

from appfirst import telemetry
from appfirst.codecs import Decoder, Encoder
from appfirst.codecs.confluent import SchemaRegistry
from appfirst.errors import DecodeError
from appfirst.streams.producer import DrainableProducer
from appfirst.topics.models import DeadLetter, Event

if TYPE_CHECKING:
    from appfirst.streams.context import Context

log = logging.getLogger("appfirst.streams")
E = TypeVar("E", bound=Event)


@dataclass(frozen=True)
class SendOutcome:
    """A record of ``send-outcomes`` (internal JSON, see the AsyncAPI document): when a
    provider accepted a message's own send, or when it was recorded unconfirmed."""

    message_id: str
    outcome: str  # accepted | unconfirmed
    at: datetime
    channel: str | None


def loads(value: bytes | None) -> Any:
    """``json.loads`` of an internal record, failing only with ``ValueError``: nesting past
    Python's recursion limit raises ``RecursionError``, which no agent would expect."""
    try:
        return json.loads(value or b"")
    except RecursionError as exc:
        raise ValueError("nested too deep") from exc


class Outbox:
    """What the agents send, kept in memory instead of produced: the agents' unit tests
    (``tests/unit/streams/agents``) run an agent alone, as Kafka Streams' test driver does,
    beside the integration tests on the real broker. Never set in a worker."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes]] = []  # (topic, key, value)
        self.partitions: list[int | None] = []  # each record's partition, if it named one

    def on(self, topic: str) -> list[tuple[bytes | None, bytes]]:
        return [(key, value) for name, key, value in self.records if name == topic]


# What of a rejected record a dead letter carries: its envelope and JSON encoding (base64,
# a third more) must stay under the producer's 1 MiB request limit, or the dead letter
# itself cannot be sent, the agent fails on it, and every restart fails on it again.
ORIGINAL_LIMIT_BYTES = 512 * 1024
KEY_LIMIT_BYTES = 1024
# A reason may quote what it refused (a parser's message): kept to a line.
REASON_LIMIT_CHARS = 500


FLUSH_LIMIT_SECONDS = 45.0


class Io:
    """Decoding what agents read, with the dead-letter path, and sending what they write."""

    def __init__(self, context: Context) -> None:
        settings = context.settings
        self.app = context.app
        self.clock = context.clock
        self.prefix = settings.topic_prefix
        self.codec = settings.codec
        self.topics = context.topics
        self.registry = (
            SchemaRegistry(settings.schema_registry_url) if settings.schema_registry_url else None
        )
        self.decoders: dict[type[Event], Decoder[Any]] = {}
        self.encoders: dict[type[Event], Encoder[Any]] = {}
        self.outbox: Outbox | None = None
        self._read_ok: dict[str, Any] = {}  # topic -> appfirst_records_in_total{outcome="ok"}

    def decoder(self, model: type[E]) -> Decoder[E]:
        found = self.decoders.get(model)
        if found is None:
            found = self.decoders[model] = Decoder(model, self.registry)
        return found

    def encoder(self, model: type[E]) -> Encoder[E]:
        found = self.encoders.get(model)
        if found is None:
            found = self.encoders[model] = Encoder(model, self.codec)
        return found

    def encode(self, event: Event) -> bytes:
        return self.encoder(type(event)).encode(event)

    def short_topic(self, full: str) -> str:
        return full.removeprefix(self.prefix)

    async def decode(self, event: Any, model: type[E], agent: str) -> E | None:
        """The event's value as ``model``, or None after sending it to ``dead-letter``."""
        message = event.message
        value: bytes | None = message.value
        try:
            dec = self.decoder(model)
            if value:
                await dec.prepare(value)
            decoded = dec.decode(value)
        except DecodeError as exc:
            await self.reject(message, exc.reason, agent)
            return None
        self.count_in(event)
        return decoded

    async def decode_outcome(self, event: Any, agent: str) -> SendOutcome | None:
        """The event's value as a ``SendOutcome``, or None after sending it to ``dead-letter``.
        One reader for every agent of ``send-outcomes``, so they agree on what is malformed."""
        message = event.message
        try:
            if not message.key:
                raise ValueError("no key")
            value = loads(message.value)
            if value.get("outcome") not in ("accepted", "unconfirmed"):
                raise ValueError(f"unknown outcome {str(value.get('outcome'))[:40]!r}")
            at = datetime.fromisoformat(value["at"])
            if at.tzinfo is None:
                raise ValueError("a time without its zone")
            outcome = SendOutcome(message.key.decode(), value["outcome"], at, value.get("channel"))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            await self.reject(message, f"not a send outcome: {exc}", agent)
            return None
        self.count_in(event)
        return outcome

    def count_in(self, event: Any) -> None:
        """One record read by one agent (a topic read by four agents counts four times)."""
        topic = event.message.topic
        counter = self._read_ok.get(topic)
        if counter is None:
            # A child per topic, found once: labels() takes a lock and builds a tuple, on
            # every record read.
            counter = self._read_ok[topic] = telemetry.records_in.labels(
                self.short_topic(topic), "ok"
            )
        counter.inc()

    def divert_to(self, outbox: Outbox | None) -> None:
        """Send to ``outbox`` (None: to Kafka again), and make ``durable()`` return at once."""
        self.outbox = outbox

    async def send(
        self, topic: Any, key: bytes | None, value: bytes, partition: int | None = None
    ) -> asyncio.Future[Any] | None:
        """A record to ``topic`` (by key, or to ``partition``), handed to the producer
        (``DrainableProducer.send_record``) and counted in ``appfirst_records_out_total``
        once the broker answers.

        Returns the record's own delivery future (the broker's acknowledgement of this record
        alone), or None if it went to an outbox."""
        full = topic.get_topic_name()
        name = self.short_topic(full)
        if self.outbox is not None:
            self.outbox.records.append((name, key, value))
            self.outbox.partitions.append(partition)
            return None
        try:
            producer = cast(DrainableProducer, self.app.producer)
            pending = await producer.send_record(full, key, value, partition)
        except Exception:
            telemetry.records_out.labels(name, "error").inc()
            raise
        pending.add_done_callback(partial(self._sent, name))
        return pending

    async def send_acknowledged(self, topic: Any, key: bytes | None, value: bytes) -> None:
        """``send``, returning once the broker has acknowledged this record (acks=all), or
        raising what the delivery failed with. Awaits the record's own future, not a flush of
        the producer, so concurrent callers each wait for their record only and share the
        producer's batching. Shielded: a caller that gives up (a timeout) leaves the delivery,
        and its count, to finish on their own."""
        pending = await self.send(topic, key, value)
        if pending is not None:
            await asyncio.shield(pending)

    def _sent(self, topic: str, done: asyncio.Future[Any]) -> None:
        failed = done.cancelled() or done.exception() is not None
        telemetry.records_out.labels(topic, "error" if failed else "ok").inc()

    async def reject(self, message: Any, reason: str, agent: str) -> None:
        if len(reason) > REASON_LIMIT_CHARS:
            reason = reason[:REASON_LIMIT_CHARS] + " (cut)"
        key: bytes | None = message.key
        if key is not None and len(key) > KEY_LIMIT_BYTES:
            reason = f"{reason}; key cut to {KEY_LIMIT_BYTES:,} of {len(key):,} bytes"
            key = key[:KEY_LIMIT_BYTES]
        original: bytes = message.value or b""
        if len(original) > ORIGINAL_LIMIT_BYTES:
            reason = (
                f"{reason}; original cut to {ORIGINAL_LIMIT_BYTES:,} of {len(original):,} bytes"
            )
            original = original[:ORIGINAL_LIMIT_BYTES]
        topic = self.short_topic(message.topic)
        record = DeadLetter(
            source_topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=key.decode("utf-8", "replace") if key is not None else None,
            original=original,
            reason=reason,
            agent=agent,
            occurred_at=self.clock.now(),
        )
        telemetry.records_in.labels(topic, "dead_letter").inc()
        telemetry.dead_letters.labels(topic, agent).inc()
        # Never the value nor the key: they may hold an NHS number, a phone number or a body.
        log.warning(
            "dead-letter topic=%s partition=%s offset=%s agent=%s reason=%s",
            topic,
            message.partition,
            message.offset,
            agent,
            reason,
            extra={
                "topic": topic,
                "partition": message.partition,
                "offset": message.offset,
                "agent": agent,
                "reason": reason,
            },
        )
        await self.send(self.topics.dead_letter, key, self.encode(record))

    async def durable(self) -> None:
        """Wait until everything written so far, table writes included, is acknowledged by the
        broker (``streams/producer.py``: Faust's own flush can return before its buffer is).

        Seen on the embedded broker after rebalances: a flush that never returns, holding its
        partition forever. A worker that cannot make its writes durable is of no use; it exits
        at once (crash-only), so that the group hands its partitions to a healthy worker, which
        re-reads them from the last committed offset.
        """
        if self.outbox is not None:
            return  # nothing is produced: see Outbox
        try:
            await asyncio.wait_for(self.app.producer.flush(), FLUSH_LIMIT_SECONDS)
        except TimeoutError:
            log.critical(
                "producer flush took over %.0f s: exiting so the group can rebalance",
                FLUSH_LIMIT_SECONDS,
            )
            os._exit(70)
