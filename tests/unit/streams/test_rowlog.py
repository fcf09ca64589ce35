"""The per-message tables' changelogs, a batch of rows a record (``streams/rowlog.py``).

The embedded broker does not compact, so what a recovery reads from a compacted changelog
is checked here, on the records the table writes: Kafka's cleaner keeps each key's last
record and drops tombstones, and a recovery from what it leaves, at any point of its work,
must hold every row the worker holds and nothing else. Everything else about these tables
(recovery after a crash, retention, the crash scenarios) runs through the broker in
``tests/integration``."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from appfirst.codecs import rowbatch
from appfirst.streams import disk
from appfirst.streams.disk import DiskRows, MemoryDb
from appfirst.streams.rowlog import BatchedChangelog, RowLog

TOPIC = "appfirst.worker-rows-changelog"


def test_a_batch_reads_back_as_written() -> None:
    rows: list[rowbatch.Row] = [("m-1", b'{"a":1}'), ("m-\u00e9", None), ("m-3", b"")]
    [(record, count)] = list(rowbatch.encode(rows))
    assert count == 3
    assert rowbatch.decode(record) == rows


def test_a_batch_is_cut_into_records_of_the_limit() -> None:
    rows = [(f"m-{i}", b"x" * 100) for i in range(50)]
    records = list(rowbatch.encode(rows, limit=1000))
    assert all(len(r) <= 1000 for r, _ in records)
    assert sum(n for _, n in records) == 50
    assert [row for r, _ in records for row in rowbatch.decode(r)] == rows
    # A row longer than the limit goes alone.
    [(record, count)] = list(rowbatch.encode([("big", b"y" * 5000)], limit=1000))
    assert count == 1 and rowbatch.decode(record) == [("big", b"y" * 5000)]


@pytest.mark.parametrize(
    "data",
    [b"", b'{"p":0}', rowbatch.MAGIC + b"\x00", rowbatch.MAGIC + b"\x00\x01k\x00\x00\x00\x09ab"],
)
def test_what_is_not_a_batch_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        rowbatch.decode(data)


def test_batch_keys_never_meet_message_ids() -> None:
    writer = rowbatch.new_writer()
    key = rowbatch.batch_key(3, writer, 12)
    assert rowbatch.is_batch_key(key) and key.startswith("#rows/3/")
    assert rowbatch.parse_batch_key(key) == (writer, 12)
    assert writer != rowbatch.new_writer()
    assert not rowbatch.is_batch_key("msg-1") and not rowbatch.is_batch_key(None)
    with pytest.raises(ValueError):
        rowbatch.parse_batch_key("#rows/3/w/x")


def test_the_log_counts_what_recovery_would_read() -> None:
    log = RowLog(slack=10)
    log.wrote(0, "w1", 0, 30)
    log.wrote(0, "w1", 0, 30)  # read again by a second recovery: once
    log.wrote(0, "w2", 0, 5)
    assert log.partitions[0].rows == 35
    assert log.due(0, live=10) and not log.due(0, live=13)
    mark = log.mark(0)
    log.wrote(0, "w3", 0, 4)  # the copy's writer, and what is written meanwhile: kept
    assert log.cut(0, mark) == [("w1", 0), ("w2", 0)]
    assert log.partitions[0].rows == 4 and list(log.partitions[0].runs) == ["w3"]
    log.wrote(0, "w3", 1, 6)
    log.dropped(0, "w3", 0)  # tombstones read back by a recovery: the run goes when whole
    assert log.partitions[0].rows == 10
    log.dropped(0, "w3", 1)
    log.dropped(0, "w9", 4)  # one whose batches were compacted away
    assert log.partitions[0].rows == 0 and log.cut(0, log.mark(0)) == []
    assert not log.due(1, live=0)
    log.forget([0])
    assert 0 not in log.partitions


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    value: bytes | None


@dataclass
class Record:
    key: str
    value: bytes | None
    message: Message


class Changelog:
    """A changelog's partitions as lists of records, written as Faust's ``send_soon``."""

    def __init__(self) -> None:
        self.partitions: dict[int, list[Record]] = {}

    def get_topic_name(self) -> str:
        return TOPIC

    def send_soon(self, *, key: str, value: bytes | None, partition: int, **_: Any) -> None:
        records = self.partitions.setdefault(partition, [])
        records.append(Record(key, value, Message(TOPIC, partition, len(records), value)))


class Table(BatchedChangelog):
    """The mixin over an in-memory store and changelog, as ``RowsTable`` is over Faust's."""

    def __init__(self, partitions: int, slack: int) -> None:
        name = TOPIC
        self.app = SimpleNamespace(
            before_flush=[],
            settings=SimpleNamespace(changelog_slack_rows=slack),
            assignor=SimpleNamespace(
                assigned_actives=lambda: {TP(name, p) for p in range(partitions)}
            ),
            producer=SimpleNamespace(flush=self._flush),
            should_stop=False,
        )
        self.changelog_topic = Changelog()
        self.rows_held = DiskRows(MemoryDb())
        self.data = SimpleNamespace(data=self.rows_held)  # the store, as Faust's table has it
        self.partition = 0
        self._init_batches()

    def partition_for_key(self, key: Any) -> int:
        return self.partition

    def _sensor_on_set(self, *_: Any) -> None: ...
    def _sensor_on_del(self, *_: Any) -> None: ...
    def _on_changelog_sent(self, *_: Any) -> None: ...

    def _to_key(self, key: Any) -> Any:
        return key

    async def _flush(self) -> None:
        for hold in self.app.before_flush:
            hold()
        await asyncio.sleep(0)

    def set(self, partition: int, key: str, value: bytes) -> None:
        self.partition = partition
        self.rows_held.put(partition, key, value)
        self.on_key_set(key, value)

    def delete(self, partition: int, key: str) -> None:
        self.partition = partition
        self.rows_held.pop(key, None)
        self.on_key_del(key)

    def rows(self) -> dict[str, bytes]:
        return dict(self.rows_held.items())


def _recover(partitions: dict[int, list[Record]], slack: int) -> Table:
    table = Table(len(partitions), slack)
    for records in partitions.values():
        table.apply_changelog_batch(records)
    return table


def _cleaned(records: list[Record], upto: int) -> list[Record]:
    """What Kafka's cleaner leaves of a partition once it has cleaned the records before
    ``upto`` (the active segment starts there, and the cleaner reads no further): before
    it, a record whose key comes again before it goes, and so does a tombstone."""
    last = {r.key: r.message.offset for r in records if r.message.offset < upto}
    return [
        r
        for r in records
        if r.message.offset >= upto or (last[r.key] == r.message.offset and r.value is not None)
    ]


async def test_a_compacted_changelog_recovers_exactly_the_rows_held(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(disk, "YIELD_EVERY", 7)  # rows written between a copy's chunks
    rng = random.Random(18)
    slack = 20
    for _ in range(20):
        table = Table(partitions=2, slack=slack)
        keys = [f"m-{i}" for i in range(150)]
        home = {key: rng.randrange(2) for key in keys}  # a message's rows stay in a partition
        copying: asyncio.Future[int] | None = None
        for step in range(1500):
            key = rng.choice(keys)
            if rng.random() < 0.3:
                table.delete(home[key], key)
            else:
                table.set(home[key], key, f"{key}@{step}".encode())
            if rng.random() < 0.05:
                table.send_pending()
            if rng.random() < 0.02 and (copying is None or copying.done()):
                copying = asyncio.ensure_future(table.compact(lambda: True))
            await asyncio.sleep(0)
        if copying is not None:
            await copying
        table.send_pending()
        await table.compact(lambda: True)
        held = table.rows()
        log = table.changelog_topic.partitions
        assert _recover(log, slack).rows() == held
        for records in log.values():
            upto = rng.randrange(len(records) + 1)
            assert _recover({0: _cleaned(records, upto)}, slack).rows() == {
                k: v for k, v in held.items() if home[k] == records[0].message.partition
            }
        # What a compacted changelog keeps is bounded by what is held, not by the writes.
        for partition, records in log.items():
            kept = _cleaned(records, len(records))
            in_batches = sum(len(rowbatch.decode(r.value or b"")) for r in kept)
            assert in_batches <= 2 * table.rows_held.live(partition) + slack


async def test_a_rebalance_stops_a_copy_before_its_tombstones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(disk, "YIELD_EVERY", 5)
    table = Table(partitions=1, slack=0)
    for i in range(30):
        table.set(0, f"m-{i}", b"v")
        table.send_pending()
    for i in range(20):
        table.delete(0, f"m-{i}")
    table.send_pending()
    before = len(table.changelog_topic.partitions[0])
    chunks = 0

    def ready() -> bool:  # a rebalance begins after the first chunk of copies
        nonlocal chunks
        chunks += 1
        return chunks <= 2

    assert await table.compact(ready) == 0
    written = table.changelog_topic.partitions[0][before:]
    assert written and all(r.value is not None for r in written)  # copies, no tombstone
    assert _recover(table.changelog_topic.partitions, 0).rows() == table.rows()
    assert await table.compact(lambda: True) == 31 + 1  # every batch, the stopped copy's too
    log = table.changelog_topic.partitions
    for upto in range(len(log[0]) + 1):
        assert _recover({0: _cleaned(log[0], upto)}, 0).rows() == table.rows()


async def test_rows_of_an_earlier_release_are_read_and_never_come_back() -> None:
    # An earlier release wrote a record per row, under the message id.
    table = Table(partitions=1, slack=0)
    old = table.changelog_topic
    for i in range(10):
        old.send_soon(key=f"m-{i}", value=f"old-{i}".encode(), partition=0)
    old.send_soon(key="m-9", value=None, partition=0)
    upgraded = _recover(old.partitions, 0)
    assert upgraded.rows() == {f"m-{i}": f"old-{i}".encode() for i in range(9)}
    upgraded.changelog_topic = old  # the new release writes on
    for i in range(5):
        upgraded.delete(0, f"m-{i}")  # settled and deleted, in a batch
    for n in range(3):  # the rows still held, written again: enough for a copy to be due
        for i in range(5, 9):
            upgraded.set(0, f"m-{i}", f"new-{i}-{n}".encode())
        upgraded.send_pending()
    assert await upgraded.compact(lambda: True) > 0
    log = old.partitions[0]
    # Every deleted row's own record is tombstoned with the batch that deleted it: once the
    # cleaner has removed that batch, it cannot come back.
    gone = {r.key for r in log if r.value is None and not rowbatch.is_batch_key(r.key)}
    assert {f"m-{i}" for i in range(5)} <= gone
    for upto in range(len(log) + 1):
        assert _recover({0: _cleaned(log, upto)}, 0).rows() == upgraded.rows()


async def test_a_flush_takes_the_rows_held_back() -> None:
    table = Table(partitions=1, slack=0)
    table.set(0, "m-1", b"v")
    assert table.changelog_topic.partitions == {}  # held back for others to join it
    for hold in table.app.before_flush:
        hold()
    [record] = table.changelog_topic.partitions[0]
    assert rowbatch.decode(record.value or b"") == [("m-1", b"v")]


def _cleaning_changes_nothing(records: list[Record]) -> None:
    """Cut the log at every point (a crash there), and let the cleaner work up to points
    before the cut: recovery must read the same rows as from the log uncleaned."""
    for end in range(len(records) + 1):
        cut = records[:end]
        want = _recover({0: cut}, 0).rows()
        for upto in {end // 3, 2 * end // 3, end}:
            assert _recover({0: _cleaned(cut, upto)}, 0).rows() == want, (end, upto)


def _take_over(table: Table, log: Changelog) -> None:
    """``table``'s process takes partition 0 over: its rows dropped, the log read from the
    start, a new writer (as ``RowsTable`` does on a rebalance)."""
    table.rows_held.clear()
    table.row_log.forget([0])
    table.new_writer()
    table.changelog_topic = log
    table.apply_changelog_batch(log.partitions.get(0, []))


async def test_ownership_going_back_and_forth_never_brings_a_row_back() -> None:
    rng = random.Random(7)
    log = Changelog()
    workers = [Table(partitions=1, slack=4), Table(partitions=1, slack=4)]
    keys = [f"m-{i}" for i in range(12)]
    owner = workers[0]
    owner.changelog_topic = log
    for step in range(400):
        if rng.random() < 0.04:  # a rebalance: the other worker (or the same) takes over
            owner.send_pending()
            owner = rng.choice(workers)
            _take_over(owner, log)
        key = rng.choice(keys)
        if rng.random() < 0.4:
            owner.delete(0, key)
        else:
            owner.set(0, key, f"{key}@{step}".encode())
        if rng.random() < 0.2:
            owner.send_pending()
        if rng.random() < 0.05:
            await owner.compact(lambda: True)
    owner.send_pending()
    assert _recover(log.partitions, 0).rows() == owner.rows()
    _cleaning_changes_nothing(log.partitions[0])


async def test_a_crash_while_a_copy_tombstones_leaves_what_was_held() -> None:
    table = Table(partitions=1, slack=0)
    old = table.changelog_topic
    for i in range(6):  # rows of an earlier release, some deleted since
        old.send_soon(key=f"s-{i}", value=b"old", partition=0)
    _take_over(table, old)
    for i in range(3):
        table.delete(0, f"s-{i}")
    for n in range(4):
        for i in range(10):
            table.set(0, f"m-{i}", f"v{n}".encode())
        table.delete(0, f"m-{n}")
        table.send_pending()
    start = len(old.partitions[0])
    assert await table.compact(lambda: True) > 0
    held = table.rows()
    for end in range(start, len(old.partitions[0]) + 1):  # the worker dies here
        cut = old.partitions[0][:end]
        for upto in range(end + 1):
            assert _recover({0: _cleaned(cut, upto)}, 0).rows() == held, (end, upto)
