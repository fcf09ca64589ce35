"""Commit only what was processed: after every rebalance, re-read each partition from its
committed offset, whole, and never commit past a record that was not acknowledged.

Faust fetches records as soon as partitions are assigned. Those that reach a stream before
the rebalance is over are skipped; Faust counts on its seek to the committed offset,
afterwards, to read them again. Two holes let such a record be committed over unread:

- aiokafka's ``seek_to_committed`` only moves a partition with a committed offset above 0,
  so a partition never committed (a new consumer group, or no commit yet before a crash)
  stayed where the skipped records left it. Seen here: a dispatcher of its own skipped the
  first dispatch of a partition, and in the crash test 48 send requests were never routed.
- Faust's commit treats the committed offset as the last record processed, where Kafka's
  is the next to read: a record exactly at the committed offset, unacknowledged, is passed
  by the next commit once the one after it is acknowledged (``Consumer._new_offset``
  checks ``min(acked) - committed > 1``; gaps start at ``committed + 1``). Seen here: one
  send request in the crash test re-keyed and never routed, its offset committed over.

- Records fetched before a seek, still being handed out after it, are read as if they
  followed the new position: one at offset N after a seek to P makes Faust's reader mark
  P..N-1 as a gap (offsets that do not exist), which the next commit passes, and drop the
  re-fetched P..N-1 as already read. Seen here: runs of 3 to 5 send requests in a row
  never routed, their offsets committed over.

This consumer rewinds never-committed partitions to their start, forgets the
acknowledgements of every record at or past the committed offset (all of them will be read
again), hands out no record of a partition from a fetch begun before that partition's
latest seek (and seeks it there again, so that nothing fetched since is skipped), and
commits a partition only once the record at its committed offset has been acknowledged, or
is known not to exist (compacted away: the first record read after the seek lies beyond
it).

A third kind of acknowledgement means nothing either: Faust acknowledges every record it
skips (one handed to a stream while a rebalance or a stop is under way, or fetched in an
earlier generation of the group), and the event an agent was cancelled in, in the
``finally`` of its stream iterator (a stop cancels every agent mid-event). Such a record was
not processed; the final commit of a stop, or the next commit after a rebalance, would pass
it. This consumer ignores every acknowledgement made while the flow is suspended or for a
record of an earlier generation: the record is read again from the committed offset, by
this worker after the rebalance or by the partition's next owner, and the agents' effects
are idempotent. Faust's compiled stream iterator writes acknowledgements into the
consumer's books itself, past ``ack``; ``AckedStream`` keeps streams on Faust's Python
iterator, which acknowledges through ``ack``.

Table recovery reads each changelog partition up to the end ``highwaters`` lists, which
Faust takes from ListOffsets. The embedded broker (Tansu) answers ListOffsets with the last
batch's base offset plus one, not the end (measured: 1 where a 1,283-record batch ended at
1,283; a Fetch reports the true high watermark). A new owner then stopped recovery at the
first record of the changelog's last batch and never applied the rest: after a SIGKILL the
last messages of a burst lost their deadlines (no fallback SMS) and their patients'
eligibility. ``highwaters`` here reads each partition's last batch to the true end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any, cast

from aiokafka import TopicPartition
from aiokafka.errors import IllegalStateError
from faust.transport.drivers import aiokafka as driver
from faust.types import TP

from appfirst.streams.deliver import InlineDelivery
from appfirst.streams.iterate import LeanIteration
from appfirst.streams.take import TakeStream

log = logging.getLogger("appfirst.streams")
TRUE_END_TIMEOUT_SECONDS = 30.0


class RewindingConsumer(InlineDelivery, driver.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._seeks: dict[TP, int] = {}  # seeks so far, per partition
        self._sought: dict[TP, int] = {}  # where the latest seek put each partition

    def _note_seek(self, tp: TP, offset: int) -> None:
        self._seeks[tp] = self._seeks.get(tp, 0) + 1
        self._sought[tp] = offset

    def ack(self, message: Any) -> bool:
        app = self.app
        if app.flow_control.is_active() and message.generation_id == app.consumer_generation_id:
            return bool(super().ack(message))
        # Skipped, or interrupted by a stop or a rebalance: to be read again, never committed.
        message.acked = True
        self._unacked_messages.discard(message)
        return False

    async def seek(self, partition: TP, offset: int) -> None:
        await super().seek(partition, offset)
        self._note_seek(TP(partition.topic, partition.partition), offset)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        # Counted before the fetch: a seek while it is under way may have come before or
        # after the records it returns, so they are dropped and fetched again either way.
        before = dict(self._seeks)
        again: dict[TP, int] = {}
        async for tp, message in super().getmany(timeout):
            key = TP(tp.topic, tp.partition)
            if self._seeks.get(key, 0) != before.get(key, 0):
                again.setdefault(key, self._sought[key])
                continue
            yield tp, message
        for tp, offset in again.items():
            await self._reposition(tp, offset)
        await self._read_again_what_was_dropped()

    async def _read_again_what_was_dropped(self) -> None:
        """Seek a stream partition back to its next unread record where the client has
        fetched past records Faust never handed to a stream.

        Faust's ``getmany`` drops the rest of a fetch when the flow stops or the generation
        changes mid-way, and the client's position has already moved past those records.
        After a rebalance its seek to the committed offsets reads them again; with none to
        follow, the partition was read no more. Seen here: a worker started after a clean
        stop, ready, with two partitions of ``router-by-patient`` fetched to their end
        (positions 777 and 732) and read to 233, their requests never routed until another
        restart. Here, once every record handed out has been read (the end of a fetch),
        a position past the next record to read means records were dropped."""
        app = self.app
        if not app.flow_control.is_active() or app.in_recovery or app.rebalancing:
            return  # the rebalance's own seek to the committed offsets follows
        client = getattr(self._thread, "_consumer", None)
        try:
            assignment = client._subscription.subscription.assignment if client else None
        except AttributeError:
            return
        if assignment is None:
            return
        changelogs = app.tables.changelog_topics
        for tp in list(self._active_partitions or ()):
            read = self._read_offset.get(tp)
            if read is None or tp.topic in changelogs:
                continue
            state = assignment.state_value(TopicPartition(tp.topic, tp.partition))
            if state is None or not state.has_valid_position:
                continue  # not assigned (any more), or awaiting its first position
            position = state.position
            if position > read + 1:
                log.warning(
                    "records fetched and not handed out: reading again topic=%s partition=%s "
                    "from offset %s (fetched to %s)",
                    tp.topic,
                    tp.partition,
                    read + 1,
                    position,
                    extra={"topic": tp.topic, "partition": tp.partition},
                )
                await self._reposition(tp, read + 1)

    async def _reposition(self, tp: TP, offset: int) -> None:
        try:
            await self._seek(tp, offset)
        except IllegalStateError:
            return  # revoked: its next owner starts from the committed offset
        self._read_offset[tp] = offset - 1
        self._note_seek(tp, offset)

    async def perform_seek(self) -> None:
        committed = await self.seek_to_committed()
        changelogs = self.app.tables.changelog_topics
        positions: dict[TP, int] = {}
        for raw, offset in committed.items():
            tp = TP(raw.topic, raw.partition)
            if tp.topic in changelogs:
                continue  # table recovery positions these itself
            self._acked.pop(tp, None)
            self._acked_index.pop(tp, None)
            self._gap.pop(tp, None)
            if offset is None or offset <= 0:
                try:
                    await self._seek(tp, 0)  # before the log's start, aiokafka resets to it
                except IllegalStateError:
                    # Revoked since (Faust also seeks while a rebalance is under way): the
                    # next owner seeks it, and the other partitions still need theirs.
                    continue
            positions[tp] = max(offset or 0, 0)
            self._note_seek(tp, positions[tp])
        for tp, offset in committed.items():
            tp = TP(tp.topic, tp.partition)
            if tp in positions:
                # The next record to process is ``offset``. Faust's reader counts the last
                # record read, so one before it: a first record read beyond it then marks
                # the offsets in between as a gap (compacted away), and commits go on.
                self._committed_offset[tp] = positions[tp]
                self._read_offset[tp] = positions[tp] - 1
            else:
                self._read_offset[tp] = offset if offset is not None and offset >= 0 else None
                if offset is not None:
                    self._committed_offset[tp] = offset or None

    async def highwaters(self, *partitions: TP) -> Mapping[TP, int]:
        """The true end of each partition, for table recovery (see the module docstring)."""
        listed = await super().highwaters(*partitions)
        if self.in_transaction:
            return listed  # last stable offsets, from the fetch state: not ListOffsets
        if not any(listed.values()):
            return listed  # all empty: nothing to confirm (and no probe left unclosed)
        # A client of its own (no group, same servers and credentials): the worker's consumer
        # is positioned for recovery and must not be moved.
        probe = self._thread._create_client_consumer(cast(driver.Transport, self.transport))
        ends = await true_ends(probe, listed)
        short = {tp: (listed[tp], end) for tp, end in ends.items() if end != listed[tp]}
        if short:
            log.info("changelog ends past the listed ones (listed, true): %s", short)
        return ends

    def _new_offset(self, tp: TP) -> int | None:
        committed = self._committed_offset[tp]
        acked = self._acked[tp]
        if committed is not None and acked:
            head = min(acked)
            gaps = self._gap[tp]
            if gaps:
                head = min(head, gaps.begin())
            if head > committed:
                return None  # the record at the committed offset is not processed yet
        return super()._new_offset(tp)

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        committed = self._committed_offset[tp]
        if committed is not None:
            offset_from = max(offset_from, committed)  # Faust's own starts one past it
        if offset_from <= offset_to:
            gaps = self._gap[tp]
            gaps.addi(offset_from, offset_to + 1)  # intervals exclude their end
            await asyncio.sleep(0)
            gaps.merge_overlaps()


async def true_ends(probe: Any, listed: Mapping[TP, int]) -> dict[TP, int]:
    """``listed`` ends made true by fetching each non-empty partition from its listed end
    less one: a fetch returns the whole batch that offset is in, and the partition's high
    watermark. On Apache Kafka the listed end already is the high watermark, and this
    confirms it. ``probe``: an unstarted consumer, stopped here."""
    ends = dict(listed)
    unread = {TopicPartition(tp.topic, tp.partition): tp for tp, end in listed.items() if end}
    if not unread:
        return ends
    await probe.start()
    try:
        probe.assign(list(unread))
        for tp in unread:
            probe.seek(tp, listed[unread[tp]] - 1)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TRUE_END_TIMEOUT_SECONDS
        while unread:
            if loop.time() > deadline:
                # Recovering to a wrong end would lose state: fail the recovery instead.
                raise TimeoutError(f"no fetch answered for {sorted(map(str, unread))}")
            batches = await probe.getmany(*unread, timeout_ms=200)
            for tp in list(unread):
                highwater = probe.highwater(tp)  # set by any answered fetch, records or not
                records = batches.get(tp)
                if highwater is None and not records:
                    continue
                key = unread.pop(tp)
                last = records[-1].offset + 1 if records else 0
                ends[key] = max(ends[key], highwater or 0, last)
    finally:
        await probe.stop()
    return ends


class AckedStream(LeanIteration, TakeStream):
    """A stream whose acknowledgements all go through ``RewindingConsumer.ack``, whose
    batches cost nothing while idle (``streams/take.py``), and which lets the event loop
    run every few events rather than before each (``streams/iterate.py``)."""

    def __aiter__(self) -> Any:
        it = self.lean_aiter()
        # As Faust's own __aiter__ does: the stream closes it when it stops.
        self._active_agens.add(cast(AsyncGenerator[Any, None], it))
        return it


class RewindingTransport(driver.Transport):
    Consumer = RewindingConsumer
