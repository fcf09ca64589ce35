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

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from appfirst import telemetry
from appfirst.rules.schedule import EndIndex
from appfirst.streams.app import (
    acting_for_partition,
    app,
    clock,
    each_row,
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
    # Ends to within a prune interval: a row is never deleted before the prune after its
    # end anyway, and a bucket's key costs a list slot where an exact index cost ~150 B.
    index: EndIndex = field(
        default_factory=lambda: EndIndex(grain=settings.retention_interval_seconds)
    )
    indexed: set[int] = field(default_factory=set)
    revoked: set[int] = field(default_factory=set)  # since the last _sync began

    def note(self, key: str, row: Any) -> None:
        """After a write of ``row`` under ``key``: index when it ends."""
        self.mark(key, *self.end_of(row))

    def mark(self, key: str, partition: int, end: float | None) -> None:
        """``note`` for a writer that already knows the row's partition and end."""
        self.index.note(partition, sys.intern(key), end)  # the table's own copy of the key

    async def _sync(self) -> None:
        """Index the rows of newly owned partitions from the (recovered) table."""
        owned = owned_partitions(self.topic)
        for partition in self.indexed - owned:
            self.index.drop(partition)
        self.indexed &= owned
        new = owned - self.indexed
        if not new:
            return
        self.revoked.clear()
        async for key, row in each_row(self.table):
            partition, end = self.end_of(row)
            if partition in new:
                self.mark(key, partition, end)
        # One revoked meanwhile (and perhaps recovered again since the keys were taken) is
        # indexed afresh next time.
        self.indexed |= (new - self.revoked) & owned_partitions(self.topic)

    async def prune(self, now: float) -> int:
        """Delete the owned rows whose end has passed; how many went."""
        await self._sync()
        if not tables_ready():
            return 0  # a rebalance began while indexing: next time
        deleted = 0
        # Ownership as it is now, and no await below: a row of a partition another worker
        # has taken over is never deleted from here.
        for partition in self.indexed & owned_partitions(self.topic):
            for key in self.index.pop_due(partition, now):
                row = self.table.get(key)
                if row is None:
                    continue  # gone already, or listed twice
                _, end = self.end_of(row)
                if end is None or end > now:
                    continue  # rewritten since: its writer listed it under its new end
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
            retained.revoked.add(partition)


@app.timer(interval=settings.retention_interval_seconds)  # type: ignore[untyped-decorator]
async def prune() -> None:
    if not tables_ready():
        return  # a half-recovered table: its rows would be indexed short
    now = clock.now().timestamp()
    for retained in _retained:
        deleted = await retained.prune(now)
        if deleted:
            telemetry.rows_deleted.labels(retained.name).inc(deleted)
        telemetry.table_rows.labels(retained.name).set(len(retained.table))
