"""What every part of a worker is built from: its settings, its clock and its Faust app,
with the topics, the input and output path and the retention of rows they all share.

``create_app`` (``streams/worker.py``) makes one ``Context`` and hands it to each part
(``Router``, ``Tracker``, ...), which declares its tables, agents, timers and pages on
``context.app``. Nothing is read from the environment here: a test builds a context from
the ``Settings`` it wants, with the clock it wants.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

import faust

from appfirst.clock import Clock, WallClock
from appfirst.settings import Settings
from appfirst.streams.app import (
    AgentFn,
    JsonRows,
    PartitionOnly,
    RowsTable,
    SharedKeyTable,
    WorkerGroupRowsTable,
    WorkerGroupTable,
    acting_for,
    agent_name,
    crash_only,
    make_app,
)
from appfirst.streams.broadcast import Apply, BroadcastTable
from appfirst.streams.io import Io
from appfirst.streams.retention import Retention
from appfirst.streams.rowlog import CHANGELOG_CONFIGS
from appfirst.streams.topics import Topics

V = TypeVar("V")


class Context:
    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or WallClock()
        self.deadlines = settings.deadlines()
        self.app = make_app(settings)
        self.topics = Topics(self.app, settings)
        self.io = Io(self)
        self.retention = Retention(self)
        # Broadcast tables ``/readyz`` waits for: routing needs them whole.
        self.loading: list[BroadcastTable[Any]] = []

    def broadcast(
        self, topic: str, apply: Apply[V], *, before_ready: bool = True
    ) -> BroadcastTable[V]:
        """Every partition of ``topic`` (contract name) as a table on this worker, followed
        by a task of the app; with ``before_ready``, the worker is not ready until the table
        holds what the topic held when it started."""
        table: BroadcastTable[V] = BroadcastTable(self.settings, self.settings.topic(topic), apply)
        self.app.task(table.run)
        if before_ready:
            self.loading.append(table)
        return table

    def agent(self, channel: Any) -> Callable[[AgentFn], Any]:
        """``app.agent``, crash-only: the one way agents are declared here."""

        def declare(fn: AgentFn) -> Any:
            return self.app.agent(channel, name=_name_of(fn))(crash_only(fn))

        return declare

    def fault_point(self, name: str) -> None:
        """Raise once per data directory where ``APPFIRST_FAULT_ONCE`` names this point:
        how the crash tests make an agent fail mid-event, for real, in a worker process."""
        if self.settings.fault_once != name:
            return
        marker = Path(self.settings.data_dir) / f"fault-{name}.done"
        if marker.exists():
            return
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        raise RuntimeError(f"injected fault at {name} (APPFIRST_FAULT_ONCE)")

    def current(self, event: Any) -> bool:
        """Whether ``event`` was fetched in the group's current generation and no rebalance
        is under way: any other is read again from the committed offset
        (``streams/rewind.py``)."""
        return bool(self.app.flow_control.is_active() and self.same_generation(event))

    def same_generation(self, event: Any) -> bool:
        """Whether no rebalance has completed since ``event`` was fetched (one may have
        begun: a stop or a rebalance pauses the flow before the generation changes)."""
        return bool(event.message.generation_id == self.app.consumer_generation_id)

    @contextmanager
    def acting_for_partition(self, topic: str, partition: int) -> Iterator[None]:
        """Table writes inside go to ``partition`` of the changelog, as if for a record of
        ``topic`` (contract name): for timers, which write outside any event."""
        with acting_for(PartitionOnly(self.settings.topic(topic), partition)):
            yield

    def tables_ready(self) -> bool:
        """No rebalance or table recovery under way: a timer acting on a half-recovered
        table could act early or twice."""
        app = self.app
        recovery: Any = getattr(app.tables, "recovery", None)
        return not (
            app.rebalancing
            or getattr(app, "in_recovery", False)
            or recovery is None
            or not recovery.completed.is_set()
        )

    def owned_partitions(self, topic: str) -> set[int]:
        """The partitions of ``topic`` (contract name) this worker actively owns."""
        name = self.settings.topic(topic)
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == name}

    def table(
        self,
        name: str,
        *,
        worker_group_changelog: bool = False,
        raw_values: bool = False,
        per_message: bool = False,
    ) -> Any:
        """A table of JSON values under str keys (JSON keys survive changelog recovery as
        str).

        ``raw_values``: the values are bytes the caller encodes (``json_rows``' compact
        rows: bytes cost far less memory than a dict of the same data).
        ``per_message``: a row per message, kept where ``APPFIRST_ROW_STORE`` says.
        """
        values = "raw" if raw_values else "json"
        schema: Any = faust.Schema(key_serializer="json", value_serializer=values)
        kinds = (
            (WorkerGroupRowsTable, RowsTable) if per_message else (WorkerGroupTable, SharedKeyTable)
        )
        kind = kinds[0] if worker_group_changelog else kinds[1]
        table = self.app.tables.add(
            kind(
                self.app,
                name=name,
                default=None,
                schema=schema,
                # The changelog's serializer follows value_type, not the schema.
                value_type=bytes if raw_values else None,
                partitions=self.settings.partitions,
                beacon=self.app.tables.beacon,
                extra_topic_configs=CHANGELOG_CONFIGS if per_message else None,
            )
        )
        if per_message:
            self._compact_changelog(cast(RowsTable, table))
        return table

    def _compact_changelog(self, table: RowsTable) -> None:
        """A per-message table's changelog kept to what its rows are now
        (``streams/rowlog.py``), on every worker for the partitions it owns."""

        async def compact() -> None:
            if self.tables_ready():
                await table.compact(self.tables_ready)

        compact.__name__ = compact.__qualname__ = f"compact_{table.name}"
        self.app.timer(interval=self.settings.retention_interval_seconds)(compact)

    def json_rows(self, name: str, *, worker_group_changelog: bool = False) -> JsonRows:
        """``table`` for a row per message: JSON objects, held compact (``JsonRows``)."""
        return JsonRows(
            self.table(
                name,
                worker_group_changelog=worker_group_changelog,
                raw_values=True,
                per_message=True,
            )
        )


def _name_of(fn: AgentFn) -> str:
    """An agent's full name: its part's module and its name
    (``appfirst.streams.messages.follow``)."""
    return f"{fn.__module__}.{agent_name(fn)}"
