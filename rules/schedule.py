"""When the sweep may act: an index of due times, and the time up to which it is safe.

``DeadlineIndex`` holds, per partition, the due time of every message that is owed a
fallback, in a heap with lazy deletion: finding what is due costs time in proportion to
what is due, not to everything pending.

``safe_until`` is the sweep's notion of "now" for one partition. A fallback due at ``t`` may
go only once every input that could cancel it (dispatches, delivery and read receipts of
that partition) has been read up to ``t``: otherwise a read receipt still waiting in Kafka,
behind a backlog after a restart, would be overtaken by the fallback it should have stopped.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field


@dataclass
class DeadlineIndex:
    _heaps: dict[int, list[tuple[float, str]]] = field(default_factory=dict)
    _due: dict[int, dict[str, float]] = field(default_factory=dict)

    def own(self, partition: int) -> None:
        """Start indexing a partition (owned, even with nothing pending)."""
        self._due.setdefault(partition, {})

    def update(self, partition: int, message_id: str, due: float | None) -> None:
        """Record the message's current due time (None: nothing owed)."""
        current = self._due.setdefault(partition, {})
        if due is None:
            current.pop(message_id, None)
            return
        if current.get(message_id) == due:
            return
        current[message_id] = due
        heapq.heappush(self._heaps.setdefault(partition, []), (due, message_id))

    def pop_due(self, partition: int, until: float) -> list[tuple[str, float]]:
        """Remove and return (message_id, due) of every entry due at or before ``until``."""
        heap = self._heaps.get(partition)
        current = self._due.get(partition, {})
        found: list[tuple[str, float]] = []
        while heap and heap[0][0] <= until:
            due, message_id = heapq.heappop(heap)
            if current.get(message_id) == due:  # else stale: moved or cancelled since
                del current[message_id]
                found.append((message_id, due))
        return found

    def next_due(self, partition: int) -> float | None:
        heap = self._heaps.get(partition)
        current = self._due.get(partition, {})
        while heap and current.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def drop(self, partition: int) -> None:
        self._heaps.pop(partition, None)
        self._due.pop(partition, None)

    def partitions(self) -> set[int]:
        return set(self._due)

    def pending(self) -> int:
        return sum(len(d) for d in self._due.values())


@dataclass
class EndIndex:
    """When rows end, to within ``grain`` seconds: a key costs one list slot in its bucket,
    where ``DeadlineIndex`` costs a heap entry, a dict entry and two floats.

    For retention, whose rows need no precision: a bucket is due once its last second has
    passed, so a row goes at most ``grain`` after its end and never before. A key noted
    again is listed again; nothing is removed on update. The caller checks each key
    ``pop_due`` returns against the row's current end and drops it when the row was
    rewritten since (the rewrite noted it under its new end) or has gone.
    """

    grain: float = 30.0
    _buckets: dict[int, dict[int, list[str]]] = field(default_factory=dict)
    _order: dict[int, list[int]] = field(default_factory=dict)  # heap of bucket numbers

    def note(self, partition: int, key: str, end: float | None) -> None:
        """List ``key`` under its end (None: pending work, nothing to list)."""
        if end is None:
            return
        bucket = math.floor(end / self.grain)
        buckets = self._buckets.setdefault(partition, {})
        keys = buckets.get(bucket)
        if keys is None:
            keys = buckets[bucket] = []
            heapq.heappush(self._order.setdefault(partition, []), bucket)
        elif keys[-1] == key:
            return  # rewritten straight after: listed already
        keys.append(key)

    def pop_due(self, partition: int, until: float) -> list[str]:
        """Remove and return the keys of every bucket wholly at or before ``until``."""
        order = self._order.get(partition)
        buckets = self._buckets.get(partition, {})
        found: list[str] = []
        while order and (order[0] + 1) * self.grain <= until:
            found.extend(buckets.pop(heapq.heappop(order)))
        return found

    def drop(self, partition: int) -> None:
        self._buckets.pop(partition, None)
        self._order.pop(partition, None)

    def listed(self) -> int:
        """Keys listed, stale ones included (what the index costs)."""
        return sum(len(k) for b in self._buckets.values() for k in b.values())


@dataclass(frozen=True)
class InputProgress:
    """How far the tracker has read one input topic-partition."""

    caught_up: bool  # nothing left to read (processed offset + 1 >= high watermark)
    watermark: float | None  # latest event time read, epoch seconds


def safe_until(inputs: list[InputProgress], *, now: float, lateness: float, replay: bool) -> float:
    """The latest due time the sweep may act on for one partition.

    Live: an input that is caught up allows up to ``now``; one with a backlog allows up to
    its watermark less ``lateness`` (events are near, not strictly, in time order). Replay:
    inputs are recorded in time order, so the watermark itself; an input read to its end
    holds nothing back.
    """
    limit = math.inf if replay else now
    for progress in inputs:
        if progress.caught_up:
            continue
        if progress.watermark is None:
            return -math.inf  # not read at all yet: nothing is safe
        mark = progress.watermark if replay else progress.watermark - lateness
        limit = min(limit, mark)
    return limit
