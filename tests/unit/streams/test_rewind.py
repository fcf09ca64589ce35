"""The commit guard of streams/rewind.py: never commit past a record not yet processed.

Only the consumer's offset books are exercised (as Faust's Consumer initialises them): no
app, no broker.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
from faust.types import TP
from intervaltree import IntervalTree

from appfirst.streams.rewind import RewindingConsumer

REQUESTS = TP("send-requests", 2)
ELIGIBILITY = TP("eligibility", 0)


@pytest.fixture
def consumer() -> Any:
    consumer: Any = RewindingConsumer.__new__(RewindingConsumer)
    consumer._committed_offset = defaultdict(lambda: None)
    consumer._acked = defaultdict(list)
    consumer._acked_index = defaultdict(set)
    consumer._gap = defaultdict(IntervalTree)
    return consumer


def test_a_record_at_the_committed_offset_holds_the_commit_until_processed(
    consumer: Any,
) -> None:
    # Kafka's committed offset is the next record to read: 465 was skipped in a rebalance,
    # 466 and 467 processed since. Faust alone would commit 468 and lose 465.
    consumer._committed_offset[REQUESTS] = 465
    consumer._acked[REQUESTS] = [466, 467]
    assert consumer._new_offset(REQUESTS) is None
    consumer._acked[REQUESTS].insert(0, 465)
    assert consumer._new_offset(REQUESTS) == 468


def test_a_never_committed_partition_starts_at_offset_0(consumer: Any) -> None:
    consumer._committed_offset[REQUESTS] = 0
    consumer._acked[REQUESTS] = [1, 2]
    assert consumer._new_offset(REQUESTS) is None
    consumer._acked[REQUESTS].insert(0, 0)
    assert consumer._new_offset(REQUESTS) == 3


async def test_records_compacted_away_at_the_committed_offset_do_not_hold_it(
    consumer: Any,
) -> None:
    # Committed 10, first record read 15 (10 to 14 compacted away): Faust's reader reports
    # the gap from the last record read (9, as perform_seek sets it) to 15.
    consumer._committed_offset[ELIGIBILITY] = 10
    await consumer._add_gap(ELIGIBILITY, 10, 15)
    consumer._acked[ELIGIBILITY] = [15, 16]
    commits = []
    while (offset := consumer._new_offset(ELIGIBILITY)) is not None:
        consumer._committed_offset[ELIGIBILITY] = offset
        commits.append(offset)
    assert commits and commits[-1] == 17
