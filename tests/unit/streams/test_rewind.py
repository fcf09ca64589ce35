"""The commit guard of streams/rewind.py: never commit past a record not yet processed.

Only the consumer's offset books are exercised (as Faust's Consumer initialises them): no
app, no broker.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP
from faust.types.tuples import ConsumerMessage
from intervaltree import IntervalTree
from mode.utils.queues import FlowControlEvent

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
    consumer._unacked_messages = set()
    consumer._waiting_for_ack = None
    consumer._n_acked = 0
    return consumer


class Topics:
    def acks_enabled_for(self, topic: str) -> bool:
        return True


class App:
    """What the consumer's ``ack`` reads of the app: its flow control and generation."""

    def __init__(self) -> None:
        self.flow_control = FlowControlEvent()
        self.flow_control.resume()
        self.consumer_generation_id = 7
        self.topics = Topics()


def _message(offset: int, generation: int = 7) -> ConsumerMessage:
    return ConsumerMessage(
        REQUESTS.topic,
        REQUESTS.partition,
        offset,
        0.0,
        0,
        None,
        b"k",
        b"v",
        None,
        generation_id=generation,
    )


@pytest.fixture
def acking(consumer: Any) -> Any:
    consumer.app = App()
    consumer._committed_offset[REQUESTS] = 100
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


def test_a_record_processed_while_the_flow_runs_is_committed(acking: Any) -> None:
    for offset in (100, 101):
        assert acking.ack(_message(offset))
    assert acking._new_offset(REQUESTS) == 102


def test_acks_made_while_a_stop_or_rebalance_is_under_way_are_not_committed(
    acking: Any,
) -> None:
    # Faust acks what its streams skip once the flow is suspended, and an agent cancelled
    # mid-event acks that event as its stream iterator closes: neither was processed.
    assert acking.ack(_message(100))
    acking.app.flow_control.suspend()
    skipped = _message(101)
    assert not acking.ack(skipped)
    assert skipped.acked  # counted once: a second ack changes nothing
    assert not acking.ack(skipped)
    assert acking._new_offset(REQUESTS) == 101  # 101 is read again, by this worker or the next


def test_a_record_fetched_in_an_earlier_generation_is_not_committed(acking: Any) -> None:
    # Stuck in the conductor across a rebalance and skipped when it reaches the stream.
    assert not acking.ack(_message(100, generation=6))
    assert acking._new_offset(REQUESTS) is None
    assert acking.ack(_message(100))  # its copy from the fetch after the seek
    assert acking._new_offset(REQUESTS) == 101


class _Assignment:
    """aiokafka's view of each partition: where its next fetch starts."""

    def __init__(self, positions: dict[tuple[str, int], int]) -> None:
        self.positions = positions

    def state_value(self, tp: Any) -> Any:
        position = self.positions.get((tp.topic, tp.partition))
        return (
            None
            if position is None
            else SimpleNamespace(has_valid_position=True, position=position)
        )


@pytest.fixture
def fetched(consumer: Any) -> Any:
    """A consumer whose client has fetched ``send-requests`` 2 to 777 and ``eligibility`` 0
    to 41, of which Faust handed out records to 233 and to 40."""
    app = App()
    app.in_recovery = False  # type: ignore[attr-defined]
    app.rebalancing = False  # type: ignore[attr-defined]
    app.tables = SimpleNamespace(changelog_topics={"worker-routed-changelog"})  # type: ignore[attr-defined]
    consumer.app = app
    changelog = TP("worker-routed-changelog", 0)
    consumer._active_partitions = {REQUESTS, ELIGIBILITY, changelog}
    consumer._read_offset = defaultdict(
        lambda: None, {REQUESTS: 233, ELIGIBILITY: 40, changelog: 5}
    )
    positions = {
        ("send-requests", 2): 777,
        ("eligibility", 0): 41,
        ("worker-routed-changelog", 0): 90,
    }
    assignment = _Assignment(positions)
    client = SimpleNamespace(
        _subscription=SimpleNamespace(subscription=SimpleNamespace(assignment=assignment))
    )
    consumer._thread = SimpleNamespace(_consumer=client)
    consumer._seeks, consumer._sought = {}, {}
    consumer.sought_to = []

    async def seek(tp: Any, offset: int) -> None:
        consumer.sought_to.append((tp, offset))

    consumer._seek = seek
    return consumer


async def test_records_fetched_and_never_handed_out_are_read_again(fetched: Any) -> None:
    await fetched._read_again_what_was_dropped()
    # Only the stream partition fetched past what was handed out; a changelog is recovery's.
    assert fetched.sought_to == [(REQUESTS, 234)]
    assert fetched._read_offset[REQUESTS] == 233  # the next record handed out is 234


async def test_nothing_is_read_again_while_a_rebalance_or_recovery_is_under_way(
    fetched: Any,
) -> None:
    fetched.app.rebalancing = True  # its own seek to the committed offsets follows
    await fetched._read_again_what_was_dropped()
    fetched.app.rebalancing, fetched.app.in_recovery = False, True
    await fetched._read_again_what_was_dropped()
    assert fetched.sought_to == []
