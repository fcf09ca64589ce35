"""Reading a whole table without holding the event loop (``streams/app.each_row``), as the
tracker and retention do on taking over partitions."""

from __future__ import annotations

import asyncio

from appfirst.streams.app import YIELD_EVERY, each_row


async def test_a_large_table_is_read_whole_while_the_loop_keeps_running() -> None:
    rows = {f"m{i}": i for i in range(YIELD_EVERY * 4 + 1)}
    ticks = 0
    running = True

    async def heartbeat() -> None:
        nonlocal ticks
        while running:
            ticks += 1
            await asyncio.sleep(0)

    beat = asyncio.create_task(heartbeat())
    await asyncio.sleep(0)
    seen = [key async for key, _ in each_row(rows)]
    running = False
    await beat
    assert seen == list(rows)
    # At least once per YIELD_EVERY rows, the loop ran something else.
    assert ticks >= 4


async def test_rows_are_read_as_they_are_now_and_deleted_ones_skipped() -> None:
    rows = {f"m{i}": "old" for i in range(YIELD_EVERY + 10)}
    read: dict[str, str] = {}
    async for key, row in each_row(rows):
        read[key] = row
        if key == "m0":
            # Written and deleted by an agent while the table is being read.
            rows[f"m{YIELD_EVERY + 5}"] = "new"
            del rows[f"m{YIELD_EVERY + 6}"]
            rows["later"] = "not in the snapshot"
    assert read[f"m{YIELD_EVERY + 5}"] == "new"
    assert f"m{YIELD_EVERY + 6}" not in read
    assert "later" not in read
    assert len(read) == YIELD_EVERY + 9
