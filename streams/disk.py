"""Rows on disk: the per-message tables (``json_rows``) kept in RocksDB, not in the heap.

A row per message in flight, plus the rows kept for the de-duplication window, is what a
worker's memory grew with (docs/performance.md). Here each such table is a RocksDB
database of the worker's own (``rocksdict``), and Faust's memory store is kept for
everything else about it, so recovery behaves exactly as with the memory store:

- **The changelog is the truth, the disk a cache of it.** Each process opens its databases
  empty (``APPFIRST_DATA_DIR/rows/<host>-<pid>``) and recovers them from the changelog, as the
  memory store does. A worker killed after writing a row locally but before its changelog
  record left would otherwise start with a row no other worker could see, and act on it (a
  fallback marked sent that never was). Nothing is written ahead (no WAL): a crash loses
  only what the changelog restores.
- **Rows of a partition this worker no longer owns go** once recovery completes, as the
  memory store drops the ones it recovered. Each value on disk starts with its changelog
  partition (two bytes), taken from the event being processed, as Faust takes it for the
  changelog record.
- **``len`` is a count, not a scan**: the rows gauge reads it every retention pass.

Memory is then what RocksDB is given (``APPFIRST_ROW_MEMORY_MB``, shared by the tables:
write buffers and block cache), not a function of the rows held.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import os
import shutil
import socket
from collections.abc import Iterable, Iterator, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import rocksdict
from faust.stores import memory
from faust.streams import current_event
from faust.types import TP, EventT

if TYPE_CHECKING:
    from appfirst.streams.app import App

PARTITION_BYTES = 2
YIELD_EVERY = 5000  # rows read between two yields to the loop


class DiskRows(MutableMapping[str, bytes]):
    """A str -> bytes mapping in one RocksDB database, each value stored after its
    changelog partition."""

    def __init__(self, db: rocksdict.Rdict) -> None:
        self.db = db
        self._count = 0

    @staticmethod
    def _partition() -> int:
        event = current_event()
        if event is None:  # Faust's changelog write raised before this, as for any table
            raise TypeError("a row can only be written while processing an event")
        return int(event.message.partition)

    def put(self, partition: int, key: str, value: bytes) -> None:
        encoded = key.encode()
        if self.db.get(encoded) is None:
            self._count += 1
        self.db[encoded] = partition.to_bytes(PARTITION_BYTES, "big") + value

    def __setitem__(self, key: str, value: bytes) -> None:
        self.put(self._partition(), key, value)

    def __getitem__(self, key: str) -> bytes:
        stored = self.db.get(key.encode())
        if stored is None:
            raise KeyError(key)
        return bytes(stored[PARTITION_BYTES:])

    def __delitem__(self, key: str) -> None:
        encoded = key.encode()
        if self.db.get(encoded) is None:
            raise KeyError(key)
        del self.db[encoded]
        self._count -= 1

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.db.get(key.encode()) is not None

    def __iter__(self) -> Iterator[str]:
        for key in self.db.keys():  # noqa: SIM118 (Rdict has no __iter__)
            yield cast(bytes, key).decode()  # raw mode: always bytes

    def __len__(self) -> int:
        return self._count

    def clear(self) -> None:
        for key in list(self.db.keys()):
            del self.db[key]
        self._count = 0

    def partition_of(self, key: bytes) -> int | None:
        stored = self.db.get(key)
        return None if stored is None else int.from_bytes(stored[:PARTITION_BYTES], "big")

    async def keep_only(self, partitions: set[int]) -> int:
        """Delete the rows of every other partition; how many went. Reads the keys a
        chunk at a time, yielding to the loop between chunks (a national worker holds
        millions), and checks each row again as it deletes it."""
        gone = 0
        keys = self.db.keys()
        while chunk := list(itertools.islice(keys, YIELD_EVERY)):
            for key in chunk:
                partition = self.partition_of(cast(bytes, key))
                if partition is not None and partition not in partitions:
                    del self.db[key]
                    gone += 1
            await asyncio.sleep(0)
        self._count -= gone
        return gone


class DiskStore(memory.Store[str, bytes]):
    """Faust's memory store with its rows in a ``DiskRows`` (see the module's docstring)."""

    data: DiskRows

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = cast("App", self.app).settings
        self.data = DiskRows(open_rows(settings.data_dir, self.table_name, settings.row_memory_mb))

    def apply_changelog_batch(
        self, batch: Iterable[EventT[Any]], to_key: Any, to_value: Any
    ) -> None:
        rows = self.data
        for event in batch:
            key = to_key(event.key)
            if event.message.value is None:
                rows.pop(key, None)
            else:
                rows.put(event.message.partition, key, to_value(event.value))

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        await self.data.keep_only({tp.partition for tp in active_tps})


# --- the databases: one directory per process, emptied at start ----------------------------

_dirs: dict[Path, Path] = {}
_shared: dict[str, Any] = {}
_opened = itertools.count(1)


def rows_dir(datadir: str | Path) -> Path:
    """This process's databases: ``<datadir>/rows/<host>-<pid>``, removed as the process
    exits. Those this host's processes left behind (killed) are removed as the first
    database opens; another host's (a shared volume) are left to that host."""
    root = Path(datadir).resolve() / "rows"
    mine = _dirs.get(root)
    if mine is None:
        host = socket.gethostname()
        mine = root / f"{host}-{os.getpid()}"
        root.mkdir(parents=True, exist_ok=True)
        for other in root.iterdir():
            owner, _, pid = other.name.rpartition("-")
            if owner == host and other != mine and not _alive(pid):
                shutil.rmtree(other, ignore_errors=True)
        shutil.rmtree(mine, ignore_errors=True)  # a pid reused, in a container restarted
        mine.mkdir()
        atexit.register(shutil.rmtree, mine, ignore_errors=True)
        _dirs[root] = mine
    return mine


def _alive(pid: str) -> bool:
    if not pid.isdigit():
        return True  # not a name this module gives: leave it
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def open_rows(datadir: str | Path, name: str, memory_mb: float) -> rocksdict.Rdict:
    """A new, empty database (``name`` and a number), sharing this process's write buffer
    manager and block cache (``memory_mb`` between them, set by the first)."""
    budget = int(memory_mb * 2**20)
    if "cache" not in _shared:
        # Half for the block cache, half for write buffers, charged to one manager so that
        # every database together stays within it (flushing to disk as they fill).
        _shared["cache"] = rocksdict.Cache(budget // 2)
        _shared["buffers"] = rocksdict.WriteBufferManager(budget // 2, False)
    options = rocksdict.Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_write_buffer_manager(_shared["buffers"])
    options.set_write_buffer_size(max(budget // 8, 256 * 1024))
    options.set_max_write_buffer_number(2)
    table_options = rocksdict.BlockBasedOptions()
    table_options.set_block_cache(_shared["cache"])
    table_options.set_bloom_filter(10, False)
    table_options.set_cache_index_and_filter_blocks(True)
    options.set_block_based_table_factory(table_options)
    options.set_keep_log_file_num(1)
    path = rows_dir(datadir) / f"{name}-{next(_opened)}"
    db = rocksdict.Rdict(str(path), options)
    writes = rocksdict.WriteOptions()
    writes.disable_wal = True  # type: ignore[method-assign,assignment]  # a property
    db.set_write_options(writes)
    return db
