"""Rows and deadlines on disk (streams/disk.py, streams/disk_deadlines.py), against a real
RocksDB in a temporary directory: they must behave as the in-memory forms they replace."""

from __future__ import annotations

import asyncio
import fcntl
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appfirst.rules.schedule import DeadlineIndex, EndIndex
from appfirst.streams import disk
from appfirst.streams.app import PartitionOnly, acting_for
from appfirst.streams.disk import DiskRows, MemoryDb, open_rows, rows_dir
from appfirst.streams.disk_index import DiskDeadlineIndex, DiskEndIndex, time_key, time_of

finite = st.floats(allow_nan=False, allow_infinity=True)


@given(finite, finite)
def test_time_keys_sort_as_their_times_and_read_back_exactly(a: float, b: float) -> None:
    assert (time_key(a) < time_key(b)) == (a < b)
    assert (time_key(a) == time_key(b)) == (a == b)
    assert time_of(time_key(a)) == a
    assert time_of(time_key(b)) == b


def test_pop_due_returns_only_what_is_due_in_due_order(tmp_path: Path) -> None:
    index = DiskDeadlineIndex(tmp_path, 4)
    index.update(0, "a", 30.0)
    index.update(0, "b", 10.0)
    index.update(0, "c", 20.0)
    index.update(1, "d", 5.0)
    assert index.pop_due(0, 20.0) == [("b", 10.0), ("c", 20.0)]
    assert index.pending() == 2
    assert index.pop_due(0, 25.0) == []
    assert index.next_due(0) == 30.0
    index.update(1, "d", None)
    index.drop(0)
    index.own(4)
    assert index.partitions() == {1, 4}
    assert index.pending() == 0
    assert index.pop_due(0, math.inf) == []


operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("update"),
            st.integers(0, 2),
            st.sampled_from(["a", "b", "c", "é", "a-long-message-id"]),
            st.one_of(st.none(), st.floats(-10, 100), st.sampled_from([0.0, 1e9, 1.5])),
        ),
        st.tuples(st.just("pop"), st.integers(0, 2), st.floats(-10, 100)),
        st.tuples(st.just("drop"), st.integers(0, 2)),
    ),
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(operations)
def test_the_disk_index_answers_as_the_memory_index_does(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[object, ...]]
) -> None:
    memory, disk = DeadlineIndex(), DiskDeadlineIndex(tmp_path_factory.mktemp("index"), 4)
    for op in ops:
        if op[0] == "update":
            _, partition, message_id, due = op
            memory.update(partition, message_id, due)  # type: ignore[arg-type]
            disk.update(partition, message_id, due)  # type: ignore[arg-type]
        elif op[0] == "pop":
            _, partition, until = op
            assert disk.pop_due(partition, until) == memory.pop_due(partition, until)  # type: ignore[arg-type]
        else:
            memory.drop(op[1])  # type: ignore[arg-type]
            disk.drop(op[1])  # type: ignore[arg-type]
        assert disk.pending() == memory.pending()
    for partition in range(3):
        assert disk.next_due(partition) == memory.next_due(partition)
        assert disk.pop_due(partition, math.inf) == memory.pop_due(partition, math.inf)
    disk.db.close()


async def test_rows_are_counted_and_carry_their_partition(tmp_path: Path) -> None:
    rows = DiskRows(open_rows(tmp_path, "rows", 4))
    with acting_for(PartitionOnly("t", 3)):
        rows["m1"] = b'{"a":1}'
        rows["m1"] = b'{"a":2}'  # a rewrite is one row
    rows.put(5, "m2", b"{}")
    rows.put(5, "m3", b"{}")
    assert len(rows) == 3
    assert rows["m1"] == b'{"a":2}'
    assert "m2" in rows and "m9" not in rows
    assert sorted(rows) == ["m1", "m2", "m3"]
    del rows["m3"]
    assert rows.pop("m3", None) is None
    assert len(rows) == 2
    assert await rows.keep_only({3}, lambda: True) == 1  # a partition no longer owned
    assert dict(rows.items()) == {"m1": b'{"a":2}'}
    with pytest.raises(KeyError):
        rows["m2"]


async def test_a_drop_stops_once_a_rebalance_begins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Partition 1 was revoked, and a drop of its rows began; then a rebalance gave it back
    # and its recovery wrote its rows afresh. The drop must leave them.
    monkeypatch.setattr(disk, "YIELD_EVERY", 10)
    rows = DiskRows(open_rows(tmp_path, "rows", 4))
    for n in range(100):
        rows.put(1, f"m{n:03d}", b"{}")
    rebalances = [0]

    async def rebalance_after_a_chunk() -> None:  # runs at the drop's first yield
        rebalances[0] += 1

    task = asyncio.ensure_future(rebalance_after_a_chunk())
    gone = await rows.keep_only({0}, lambda: rebalances[0] == 0)
    await task
    assert gone == 10 and len(rows) == 90
    assert await rows.keep_only({0, 1}, lambda: True) == 0  # nothing unowned: no scan


@pytest.mark.parametrize("backend", ["rocksdb", "memory"])
async def test_a_partition_taken_over_starts_without_rows_left_from_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    # Left when a drop was stopped by a rebalance; the partition's recovery must start
    # from nothing, or a row deleted meanwhile by another owner would act again (and be
    # written again by a copy of the changelog, streams/rowlog.py).
    monkeypatch.setattr(disk, "YIELD_EVERY", 7)
    rows = DiskRows(open_rows(tmp_path, "rows", 4) if backend == "rocksdb" else MemoryDb())
    for n in range(40):
        rows.put(n % 4, f"m{n:03d}", b"{}")
    assert await rows.drop({1, 3}) == 20
    assert rows.live(1) == rows.live(3) == 0 and len(rows) == 20
    assert {int(k[1:]) % 4 for k in rows} == {0, 2}
    assert await rows.drop({1}) == 0  # nothing of it: no scan


def test_a_row_is_written_only_for_an_event(tmp_path: Path) -> None:
    rows = DiskRows(open_rows(tmp_path, "rows", 4))
    with pytest.raises(TypeError):
        rows["m1"] = b"{}"


def test_each_process_starts_empty_and_the_dead_leave_nothing(tmp_path: Path) -> None:
    rows = tmp_path / "rows"
    # Left by a process that was killed: its lock is free.
    (rows / "host-123-abc" / "message-rows-1").mkdir(parents=True)
    (rows / "host-123-abc" / "owner").touch()
    # A process alive on another host sharing the volume: it holds its lock.
    (rows / "other-1-def").mkdir()
    held = (rows / "other-1-def" / "owner").open("w")
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        mine = rows_dir(tmp_path)
        assert mine.parent == rows.resolve()
        assert mine.name.startswith(f"{socket.gethostname()}-{os.getpid()}-")
        assert sorted(p.name for p in rows.iterdir()) == sorted([mine.name, "other-1-def"])
        # Another process sees this one's directory as alive.
        probe = subprocess.run(
            [sys.executable, "-c", PROBE, str(mine / "owner")], capture_output=True, text=True
        )
        assert probe.stdout.strip() == "held"
    finally:
        held.close()


PROBE = """
import fcntl, sys
with open(sys.argv[1], "a") as f:
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        print("free")
    except BlockingIOError:
        print("held")
"""


def test_ends_go_once_their_bucket_has_wholly_passed(tmp_path: Path) -> None:
    index = DiskEndIndex(tmp_path, 4, "rows", grain=30.0)
    index.note(0, "a", 95.0)  # the bucket of 90 to 120
    index.note(0, "b", None)  # pending work: never listed
    index.note(1, "c", 95.0)
    assert index.pop_due(0, 119.9) == []
    assert index.pop_due(0, 120.0) == ["a"]
    assert index.pop_due(0, 1e12) == []
    index.drop(1)
    assert index.pop_due(1, 1e12) == []


@settings(max_examples=150, deadline=None)
@given(
    notes=st.lists(
        st.tuples(st.integers(0, 2), st.sampled_from("abcdef"), st.floats(-50, 1000)), max_size=40
    ),
    until=st.floats(-50, 1100),
    grain=st.sampled_from([0.25, 1.0, 30.0]),
)
def test_the_disk_end_index_lists_what_the_memory_one_does(
    tmp_path_factory: pytest.TempPathFactory,
    notes: list[tuple[int, str, float]],
    until: float,
    grain: float,
) -> None:
    memory = EndIndex(grain=grain)
    disk = DiskEndIndex(tmp_path_factory.mktemp("ends"), 4, "rows", grain)
    for partition, key, end in notes:
        memory.note(partition, key, end)
        disk.note(partition, key, end)
    for partition in range(3):
        assert set(disk.pop_due(partition, until)) == set(memory.pop_due(partition, until))
    disk.db.close()


def test_what_the_databases_take_is_reported_by_name(tmp_path: Path) -> None:
    # For the operators' gauges (appfirst_rows_disk_bytes, appfirst_rows_memory_bytes).
    db = open_rows(tmp_path, "usage-probe", 4)
    before, _ = disk.usage()
    assert before["usage-probe"][0] == 0  # nothing on disk yet
    for n in range(2000):
        db[f"m-{n}".encode()] = b"\x00\x01" + b"x" * 200
    files, buffers = disk.usage()[0]["usage-probe"]
    assert buffers > 2000 * 200 > files == 0  # in the write buffer
    db.flush()
    db.get(b"m-1")
    (files, buffers), cache = disk.usage()[0]["usage-probe"], disk.usage()[1]
    assert files > 0 and cache > 0
