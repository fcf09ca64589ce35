"""Retention: every per-message row has an end, and is deleted once it has passed.

A table registers with ``retain``, saying which topic's partitions its changelog follows
and how to read a row's partition and end (epoch seconds, or None while the row is still
pending work). Writers call ``Retained.note`` after each write; on taking over a
partition, its rows are indexed from the recovered table. A timer on every worker
deletes, in the partitions it owns, the rows whose end has passed (a tombstone on the
changelog, so recovery drops them too). Memory and recovery time then follow pending work
plus the stated window (``APPFIRST_KEEP_SETTLED_SECONDS``), not every message ever sent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from appfirst import telemetry
from appfirst.rules.schedule import DeadlineIndex
from appfirst.streams.app import (
    acting_for_partition,
    app,
    clock,
    owned_partitions,
    settings,
    tables_ready,
)

# A row -> (the changelog partition it was written to, its end or None: keep for now).
EndOf = Callable[[Any], tuple[int, float | None]]


@dataclass
class Retained:
    name: str
    table: Any
    topic: str  # contract name of the topic whose partition each row's changelog follows
    end_of: EndOf
    index: DeadlineIndex = field(default_factory=DeadlineIndex)
    indexed: set[int] = field(default_factory=set)

    def note(self, key: str, row: Any) -> None:
        """After a write of ``row`` under ``key``: index when it ends."""
        self.mark(key, *self.end_of(row))

    def mark(self, key: str, partition: int, end: float | None) -> None:
        """``note`` for a writer that already knows the row's partition and end."""
        self.index.update(partition, key, end)

    def _sync(self, owned: set[int]) -> set[int]:
        for partition in self.indexed - owned:
            self.index.drop(partition)
        self.indexed &= owned
        new = owned - self.indexed
        if new:
            for key, row in list(self.table.items()):
                partition, end = self.end_of(row)
                if partition in new:
                    self.index.update(partition, key, end)
            self.indexed |= new
        return owned

    def prune(self, now: float) -> int:
        """Delete the owned rows whose end has passed; how many went."""
        deleted = 0
        for partition in self._sync(owned_partitions(self.topic)):
            for key, _ in self.index.pop_due(partition, now):
                row = self.table.get(key)
                if row is None:
                    continue
                at, end = self.end_of(row)
                if end is None or end > now:  # rewritten since: pending again, or later
                    self.index.update(at, key, end)
                    continue
                with acting_for_partition(self.topic, partition):
                    self.table.pop(key, None)
                deleted += 1
        return deleted


_retained: list[Retained] = []


def retain(name: str, table: Any, topic: str, end_of: EndOf) -> Retained:
    retained = Retained(name, table, topic, end_of)
    _retained.append(retained)
    return retained


def keep_until(now: float | None = None) -> float:
    """The end of a row settled now: ``APPFIRST_KEEP_SETTLED_SECONDS`` from now."""
    return (clock.now().timestamp() if now is None else now) + settings.keep_settled_seconds


@app.on_partitions_revoked.connect  # type: ignore[arg-type]
async def _on_revoked(app: Any, revoked: set[Any], **kwargs: Any) -> None:
    # Indexed again from the recovered table if they come back.
    for retained in _retained:
        name = settings.topic(retained.topic)
        for partition in {tp.partition for tp in revoked if tp.topic == name}:
            retained.index.drop(partition)
            retained.indexed.discard(partition)


@app.timer(interval=settings.retention_interval_seconds)  # type: ignore[untyped-decorator]
async def prune() -> None:
    if not tables_ready():
        return  # a half-recovered table: its rows would be indexed short
    now = clock.now().timestamp()
    for retained in _retained:
        deleted = retained.prune(now)
        if deleted:
            telemetry.rows_deleted.labels(retained.name).inc(deleted)
        telemetry.table_rows.labels(retained.name).set(len(retained.table))
