"""The Faust app as appfirst configures it, and what every part's tables and agents share.

``make_app`` builds the app from a ``Settings``; ``streams/context.py`` holds it with the
settings and the clock, and ``streams/worker.py`` (``create_app``) adds each part's agents,
tables, timers and pages to it. Nothing here is built at import."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import sys
import types
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from time import monotonic
from typing import Any, cast

import faust
import faust.stores as faust_stores
import faust.tables as faust_tables
from faust.sensors import Monitor
from faust.streams import _current_event
from faust.types import TP

from appfirst.settings import Settings
from appfirst.streams.producer import DrainableProducer
from appfirst.streams.rewind import AckedStream, RewindingTransport
from appfirst.streams.rowlog import BatchedChangelog


class Transport(RewindingTransport):
    Producer = DrainableProducer


class TableManager(faust_tables.TableManager):
    """Faust's table manager, without its second of waiting at every start."""

    async def on_start(self) -> None:
        # Faust sleeps a second here for tables declared late, after the app has started.
        # Every part declares its tables as ``create_app`` builds it, before any start, so
        # the second only delayed every start and every restart after a crash (and with them
        # the first sweep).
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


class LeanMonitor(Monitor):
    """Faust's monitor, keeping per record only what Faust's own checks read: when each
    partition's stream last took an event (``stream_inbound_time``, behind Faust's "stream
    is not processing" warnings).

    Faust calls its monitor on every record, every event of every stream and every table
    read and write, to keep statistics for its own web pages, which no one here reads
    (operators have appfirst's metrics: docs/operations.md): 3% of the worker's time on
    the bench's pipeline (measured 2026-12-07)."""

    def on_message_in(self, tp: TP, offset: int, message: Any) -> None:
        return None

    def on_stream_event_in(self, tp: TP, offset: int, stream: Any, event: Any) -> None:
        self.stream_inbound_time[tp] = monotonic()

    def on_stream_event_out(
        self, tp: TP, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        return None

    def on_message_out(self, tp: TP, offset: int, message: Any) -> None:
        return None

    def on_table_get(self, table: Any, key: Any) -> None:
        return None

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        return None

    def on_table_del(self, table: Any, key: Any) -> None:
        return None

    def on_send_initiated(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_send_completed(self, *args: Any, **kwargs: Any) -> None:
        return None


class App(faust.App):
    """Faust's app, with the settings it was made from (``make_app``)."""

    settings: Settings
    # Called at the start of every flush of the producer: what a table holds back to send
    # as a batch goes out before the flush's mark (streams/rowlog.py).
    before_flush: list[Callable[[], None]]

    def _new_transport(self) -> Any:
        # Faust's own Kafka transport, with a consumer that re-reads skipped records
        # (streams/rewind.py) and a producer whose buffer can be drained
        # (streams/producer.py).
        return Transport(self.conf.broker_consumer, self)


def group_of(settings: Settings) -> str:
    """The consumer group's name, less the topic prefix. The dispatcher role is its own
    group: a process that only sends shares no partitions with the stream workers and can
    be scaled on its own."""
    return "dispatcher" if settings.role == "dispatcher" else "worker"


def make_app(settings: Settings) -> App:
    """The Faust app for ``settings``: no agents, tables or pages yet (``streams/worker.py``
    adds those of the role)."""
    app = App(
        f"{settings.topic_prefix}{group_of(settings)}",
        broker=settings.broker or "kafka://127.0.0.1:9092",
        autodiscover=False,
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=max(0.5, settings.session_timeout_seconds / 5),
        consumer_auto_offset_reset="earliest",
        table_standby_replicas=0,
        store="memory://",
        datadir=settings.data_dir,
        producer_acks=-1,
        broker_commit_interval=settings.commit_interval_seconds,
        producer_linger=settings.producer_linger_seconds,
        # Tansu's list-offsets can trail the offsets a producer was just given; with the
        # memory store a table kept across a rebalance would then trip Faust's check and
        # crash the worker. Apache Kafka never trails; the check guards stores that persist
        # offsets across starts, which neither ours does (streams/disk.py recovers whole).
        recovery_consistency_check=False,
        # Faust can wait forever for an event fanned out to several agents to be acked
        # before it rejoins the group (faust #402, faust-streaming #133), stalling every
        # partition. Not waiting is safe here: only acked offsets are committed, and every
        # effect is idempotent.
        stream_wait_empty=False,
        Stream=AckedStream,
        Monitor=LeanMonitor,
        TableManager=TableManager,
        web_enabled=True,
        web_host=settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        web_in_thread=False,
    )
    app.settings = settings
    app.before_flush = []
    return app


EXIT_CRASH_ONLY = 70
AgentFn = Callable[[Any], Awaitable[None]]
_log = logging.getLogger("appfirst.streams")


def agent_name(fn: AgentFn) -> str:
    """What an agent is called: a part keeps the agent of its method ``_follow`` as
    ``follow``."""
    return fn.__name__.removeprefix("_")


def crash_only(fn: AgentFn) -> AgentFn:
    """An agent that fails exits the process before its event can be acknowledged.

    Faust would log the error, acknowledge the event in its stream iterator's ``finally``
    and restart the agent: a tracker error would then mean no deadline and so no fallback,
    silently. Exiting (code 70) skips that ``finally`` and every later commit, so the
    partition's next owner (this worker restarted by its supervisor, or another) reads the
    event again from the committed offset; every effect is idempotent.
    """

    name = agent_name(fn)

    @functools.wraps(fn)
    async def run(stream: Any) -> None:
        try:
            await fn(stream)
        except asyncio.CancelledError:
            raise
        except Exception:
            _log.critical(
                "agent %s failed; exiting before its event is acknowledged",
                name,
                exc_info=True,
                extra={"agent": name},
            )
            exit_crash_only()

    return run


def exit_crash_only() -> None:
    """Ends the process at once: no ``finally``, no commit. Agents' unit tests replace it
    with one that raises, so that a failing agent fails its test instead."""
    os._exit(EXIT_CRASH_ONLY)


@contextmanager
def acting_for(event: Any) -> Iterator[None]:
    """Table writes inside go to ``event``'s partition of the changelog. Faust takes the
    partition from the stream's current event, which in a batch (``take_events``) is the
    batch's last; a key written under another partition would be lost to the worker that
    owns it after a rebalance."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class PartitionOnly:
    """As much of an event as a table write needs: its source topic and partition."""

    def __init__(self, topic: str, partition: int) -> None:
        self.message = types.SimpleNamespace(topic=topic, partition=partition)


class SharedKeyTable(faust.Table[Any, Any]):
    """A table whose str keys are interned: the per-message tables, and the indexes beside
    them, keep a row per message under its id, and each agent decodes its own copy of it. Interned,
    the message has one (a str freed with its last reference, as any other)."""

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(sys.intern(key) if type(key) is str else key, value)


class WorkerGroupTable(SharedKeyTable):
    """A table whose changelog is named after the stream workers' group in every role.

    For the dispatcher's ledger of sends: it is then the same state whether the dispatcher
    runs inside the workers (role ``all``) or on its own (role ``dispatcher``), so moving
    from one layout to the other re-reads dispatches and absorbs every one already sent.
    """

    def _changelog_topic_name(self) -> str:
        prefix = cast(App, self.app).settings.topic_prefix
        return f"{prefix}worker-{self.name}-changelog"


DISK_STORE = "appfirst-rows-on-disk"
MEMORY_STORE = "appfirst-rows-in-memory"


class RowsTable(BatchedChangelog, SharedKeyTable):
    """A per-message table: its rows on disk with ``APPFIRST_ROW_STORE=disk``
    (``streams/disk.py``), in the heap with ``memory``; its changelog a batch of rows a
    record (``streams/rowlog.py``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_batches()

    def _new_store(self) -> Any:
        settings = cast(App, self.app).settings
        # Faust's own way in, so the store gets what Faust gives any store.
        faust_stores.STORES.aliases.setdefault(DISK_STORE, "appfirst.streams.disk:DiskStore")
        faust_stores.STORES.aliases.setdefault(
            MEMORY_STORE, "appfirst.streams.disk:MemoryRowsStore"
        )
        store = MEMORY_STORE if settings.row_store == "memory" else DISK_STORE
        return self._new_store_by_url(f"{store}://")


class WorkerGroupRowsTable(RowsTable, WorkerGroupTable):
    """``RowsTable`` with its changelog named as ``WorkerGroupTable``'s."""


class JsonRows:
    """A table of JSON objects held as compact JSON bytes: the per-message tables keep a row
    for every message in flight, and a small dict with its floats costs three to four times
    the bytes of its JSON. The changelog carries the same JSON as a JSON table's."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw  # the Faust table, of bytes

    def get(self, key: str) -> Any:
        value = self.raw.get(key)
        return None if value is None else json.loads(value)

    def __setitem__(self, key: str, row: Any) -> None:
        self.raw[key] = json.dumps(row, separators=(",", ":")).encode()

    def __contains__(self, key: str) -> bool:
        return key in self.raw

    def __len__(self) -> int:
        return len(self.raw)

    def pop(self, key: str, default: Any = None) -> Any:
        value = self.raw.pop(key, None)
        return default if value is None else json.loads(value)

    def keys(self) -> list[str]:
        """A snapshot: safe to hold across an await while the table changes."""
        return list(self.raw.keys())

    def items(self) -> Iterator[tuple[str, Any]]:
        for key, value in list(self.raw.items()):  # a snapshot, for the same reason
            yield key, json.loads(value)


# Rows read between two yields to the loop when a table is read whole.
YIELD_EVERY = 5000


async def each_row(table: Any) -> AsyncIterator[tuple[Any, Any]]:
    """Every row of ``table``, each read as it is now from a snapshot of the keys (a row
    deleted since is skipped), yielding to the loop every ``YIELD_EVERY`` rows: indexing a
    table of millions of rows on taking over partitions must not hold the loop, and with
    it the group's heartbeat, past the session timeout (a rebalance loop, and no sweep)."""
    for n, key in enumerate(list(table.keys()), start=1):
        row = table.get(key)
        if row is not None:
            yield key, row
        if n % YIELD_EVERY == 0:
            await asyncio.sleep(0)
