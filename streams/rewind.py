"""After every rebalance, re-read each partition from its committed offset, whole.

Faust fetches records as soon as partitions are assigned. Those that reach a stream before
the rebalance is over are skipped and acknowledged as if processed; Faust counts on its
seek to the committed offset, afterwards, to read them again. aiokafka's
``seek_to_committed`` only moves a partition with a committed offset above 0, so a
partition never committed (a new consumer group, or no commit yet before a crash) stayed
where the skipped records left it: they were never processed, and the next commit passed
them. Seen here: a dispatcher of its own skipped the first dispatch of a partition, and
in the crash test 48 send requests were never routed.

This consumer rewinds such partitions to their start, and forgets the acknowledgements of
every record at or past the committed offset (all of them will be read again), so that no
commit can pass a record before it has really been processed.
"""

from __future__ import annotations

from faust.transport.drivers import aiokafka as driver
from faust.types import TP


class RewindingConsumer(driver.Consumer):
    async def perform_seek(self) -> None:
        committed = await self.seek_to_committed()
        changelogs = self.app.tables.changelog_topics
        for raw, offset in committed.items():
            tp = TP(raw.topic, raw.partition)
            if tp.topic in changelogs:
                continue  # table recovery positions these itself
            self._acked.pop(tp, None)
            self._acked_index.pop(tp, None)
            self._gap.pop(tp, None)
            if offset is None or offset <= 0:
                await self.seek(tp, 0)  # before the log's start, aiokafka resets to it
        self._read_offset.update(
            {
                TP(tp.topic, tp.partition): offset if offset is not None and offset >= 0 else None
                for tp, offset in committed.items()
            }
        )
        self._committed_offset.update(
            {
                TP(tp.topic, tp.partition): offset or None
                for tp, offset in committed.items()
                if offset is not None
            }
        )


class RewindingTransport(driver.Transport):
    Consumer = RewindingConsumer
