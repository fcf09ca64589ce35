"""Rows on disk: the per-message tables (``json_rows``) kept in RocksDB, not in the heap.

A row per message in flight, plus the rows kept for the de-duplication window, is what a
worker's memory grew with (docs/performance.md). Here each such table is a RocksDB
database of the worker's own (``rocksdict``), and Faust's memory store is kept for
everything else about it, so recovery behaves exactly as with the memory store:

- **The changelog is the truth, the disk a cache of it.** Each process opens its databases
  empty (under ``APPFIRST_DATA_DIR/rows``) and recovers them from the changelog, as the
  memory store does. A worker killed after writing a row locally but before its changelog
  record left would otherwise start with a row no other worker could see, and act on it (a
  fallback marked sent that never was). Nothing is written ahead (no WAL): a crash loses
  only what the changelog restores.
- **Rows of a partition this worker no longer owns go** once recovery completes, as the
  memory store drops the ones it recovered: in the background, and only while no new
  rebalance has begun (one that gives a partition back recovers its rows afresh, and a
  drop begun before it must not delete them). Each value on disk starts with its changelog
  partition (two bytes), taken from the event being processed, as Faust takes it for the
  changelog record; rows are counted by partition, so a drop reads nothing unless a row of
  a partition no longer owned is left.
- **``len`` is a count, not a scan**: the rows gauge reads it every retention pass.

Memory is then what RocksDB is given (``APPFIRST_ROW_MEMORY_MB``, shared by the tables:
write buffers and block cache), not a function of the rows held. With
``APPFIRST_ROW_STORE=memory`` the same store keeps its rows in a dict (``MemoryRowsStore``).
"""

from __future__ import annotations

import asyncio
import atexit
import fcntl
import itertools
import os
import secrets
import shutil
import socket
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import rocksdict
from faust.stores import memory
from faust.streams import current_event
from faust.types import TP, EventT

if TYPE_CHECKING:
    from appfirst.streams.app import App, RowsTable

PARTITION_BYTES = 2
YIELD_EVERY = 5000  # rows read between two yields to the loop


class MemoryDb(dict[bytes, bytes]):
    """The rows of ``MemoryRowsStore``: a dict read as a database is, from a snapshot."""

    def items(self) -> Iterator[tuple[bytes, bytes]]:  # type: ignore[override]
        return iter(list(super().items()))


def _partition_of(stored: bytes) -> int:
    return int.from_bytes(stored[:PARTITION_BYTES], "big")


class DiskRows(MutableMapping[str, bytes]):
    """A str -> bytes mapping in one RocksDB database (or a ``MemoryDb``), each value
    stored after its changelog partition, with its rows counted by partition (``len``,
    and whether any row of a partition no longer owned is left)."""

    def __init__(self, db: rocksdict.Rdict | MemoryDb) -> None:
        self.db: Any = db  # raw mode: bytes keys and values either way
        self.counts: dict[int, int] = {}

    @staticmethod
    def _partition() -> int:
        event = current_event()
        if event is None:  # Faust's changelog write raised before this, as for any table
            raise TypeError("a row can only be written while processing an event")
        return int(event.message.partition)

    def _forget(self, stored: bytes) -> None:
        self.counts[_partition_of(stored)] -= 1

    def put(self, partition: int, key: str, value: bytes) -> None:
        encoded = key.encode()
        stored = self.db.get(encoded)
        if stored is not None:
            self._forget(stored)
        self.db[encoded] = partition.to_bytes(PARTITION_BYTES, "big") + value
        self.counts[partition] = self.counts.get(partition, 0) + 1

    def __setitem__(self, key: str, value: bytes) -> None:
        self.put(self._partition(), key, value)

    def __getitem__(self, key: str) -> bytes:
        stored = self.db.get(key.encode())
        if stored is None:
            raise KeyError(key)
        return bytes(stored[PARTITION_BYTES:])

    def __delitem__(self, key: str) -> None:
        encoded = key.encode()
        stored = self.db.get(encoded)
        if stored is None:
            raise KeyError(key)
        del self.db[encoded]
        self._forget(stored)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.db.get(key.encode()) is not None

    def __iter__(self) -> Iterator[str]:
        for key in self.db.keys():  # noqa: SIM118 (Rdict has no __iter__)
            yield cast(bytes, key).decode()  # raw mode: always bytes

    def __len__(self) -> int:
        return sum(self.counts.values())

    def clear(self) -> None:
        for key in list(self.db.keys()):
            del self.db[key]
        self.counts.clear()

    def live(self, partition: int) -> int:
        return self.counts.get(partition, 0)

    def apply_row(self, partition: int, key: str, value: bytes | None) -> None:
        """A row as recovery reads it: ``None`` deletes it."""
        if value is None:
            self.pop(key, None)
        else:
            self.put(partition, key, value)

    async def copy_rows(
        self,
        partitions: set[int],
        put: Callable[[int, str, bytes], None],
        chunk_done: Callable[[], Awaitable[None]],
        still: Callable[[], bool],
    ) -> int | None:
        """``put`` every row of ``partitions`` as it is now, a chunk at a time, awaiting
        ``chunk_done`` after each; how many, or None if ``still()`` stopped holding first.
        ``still()`` is checked in the step that puts each chunk, and each row is read again
        there, as it is at that moment, not as the scan's snapshot had it."""
        copied = 0
        rows = self.db.items()
        while still():
            chunk = list(itertools.islice(rows, YIELD_EVERY))
            if not chunk:
                return copied
            for key, stored in chunk:
                if _partition_of(cast(bytes, stored)) not in partitions:
                    continue
                now = self.db.get(key)
                if now is None or (partition := _partition_of(now)) not in partitions:
                    continue
                put(partition, cast(bytes, key).decode(), bytes(now[PARTITION_BYTES:]))
                copied += 1
            await chunk_done()
        return None

    async def drop(self, partitions: set[int]) -> int:
        """Delete every row of ``partitions``, a chunk at a time; how many went."""
        return await self._delete(lambda p: p in partitions, lambda: True)

    async def keep_only(self, partitions: set[int], still: Callable[[], bool]) -> int:
        """Delete the rows of every other partition while ``still()`` holds; how many went.
        It stops at the first chunk after ``still()`` no longer holds (a rebalance began:
        the partitions owned are no longer ``partitions``)."""
        return await self._delete(lambda p: p not in partitions, still)

    async def _delete(self, doomed: Callable[[int], bool], still: Callable[[], bool]) -> int:
        """Delete the rows of every partition ``doomed`` names, while ``still()`` holds.

        Reads nothing unless such a row is left (the counts say). Reads the rows a chunk at
        a time, yielding to the loop between chunks (a national worker holds millions).
        Each row is read again as it is deleted, in the same step of the loop."""
        if not any(n for p, n in self.counts.items() if n and doomed(p)):
            return 0
        gone = 0
        rows = self.db.items()
        while still() and (chunk := list(itertools.islice(rows, YIELD_EVERY))):
            for key, stored in chunk:
                if not doomed(_partition_of(cast(bytes, stored))):
                    continue
                now = self.db.get(key)  # as it is now, not as the snapshot read it
                if now is None or not doomed(_partition_of(now)):
                    continue
                del self.db[key]
                self._forget(now)
                gone += 1
            await asyncio.sleep(0)
        return gone


class DiskStore(memory.Store[str, bytes]):
    """Faust's memory store with its rows in a ``DiskRows`` (see the module's docstring).
    Its table reads the changelog itself (``streams/rowlog.py``) and gives it the rows."""

    data: DiskRows

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.data = DiskRows(self._open())
        self._rebalances = 0
        self._owned: set[int] = set()
        self._dropping: asyncio.Future[int] | None = None

    def _open(self) -> rocksdict.Rdict | MemoryDb:
        settings = cast("App", self.app).settings
        return open_rows(settings.data_dir, self.table_name, settings.row_memory_mb)

    def apply_changelog_batch(
        self, batch: Iterable[EventT[Any]], to_key: Any, to_value: Any
    ) -> None:
        # Faust's table calls its store with each record; ``RowsTable`` reads the batches
        # itself and gives the store rows (``apply_row``). Anything asking the store is
        # answered the same way, never as one row per record.
        cast("RowsTable", self.table).apply_changelog_batch(batch)

    async def on_rebalance(
        self, assigned: set[TP], revoked: set[TP], newly_assigned: set[TP], generation_id: int = 0
    ) -> None:
        self._rebalances += 1  # a drop under way stops: what it keeps may be owned again
        # A partition taken over is recovered whole (Faust reads a partition it did not
        # own from the changelog's start): rows of it left from an earlier time this worker
        # owned it (a drop stopped by a rebalance) may since have been deleted by another
        # owner whose deletion compaction has removed. Gone before recovery begins, they
        # can neither act nor be written again by a copy (streams/rowlog.py).
        table = cast("RowsTable", self.table)
        owned = table.owned()
        taken = owned - self._owned
        self._owned = owned
        await self.data.drop(taken)
        # And read from the start, whatever Faust recalls of an earlier time (it forgets
        # where it stopped when a partition is revoked, but not on every path).
        changelog = table.changelog_topic.get_topic_name()
        offsets = cast(Any, self.app).tables.recovery.active_offsets
        for partition in taken:
            offsets.pop(TP(changelog, partition), None)

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        # In the background: the partitions' streams and the sweep wait for every table's
        # callback, and a scan of millions of rows would hold them. A row of a partition
        # no longer owned is read by no one meanwhile (every reader goes by partition).
        owned = {tp.partition for tp in active_tps}
        began = self._rebalances
        self._dropping = asyncio.ensure_future(
            self.data.keep_only(owned, lambda: self._rebalances == began)
        )


class MemoryRowsStore(DiskStore):
    """``DiskStore`` with its rows in the heap (``APPFIRST_ROW_STORE=memory``)."""

    def _open(self) -> MemoryDb:
        return MemoryDb()


# --- the databases: one directory per process, emptied at start ----------------------------

OWNER = "owner"  # the file a live process holds its lock on
_dirs: dict[Path, Path] = {}
_locks: list[Any] = []  # open for the process's life: closing one releases its lock
_shared: dict[str, Any] = {}
_opened = itertools.count(1)
_databases: list[tuple[str, rocksdict.Rdict]] = []  # (name, database) of each one opened


def rows_dir(datadir: str | Path) -> Path:
    """This process's databases: a new directory under ``<datadir>/rows``, named after its
    host and pid, removed as the process exits. Each holds a lock (``flock``) on its
    ``owner`` file while its process lives, so a directory whose lock can be taken was left
    by a process that died (killed), on this host or another sharing the volume, and is
    removed as the first database opens."""
    root = Path(datadir).resolve() / "rows"
    mine = _dirs.get(root)
    if mine is None:
        root.mkdir(parents=True, exist_ok=True)
        for other in root.iterdir():
            if not other.name.startswith("."):  # one being made: not locked yet
                _remove_if_abandoned(other)
        name = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        making = root / f".{name}"
        making.mkdir()
        lock = (making / OWNER).open("w")
        fcntl.flock(lock, fcntl.LOCK_EX)  # held until the process ends
        _locks.append(lock)
        mine = making.rename(root / name)
        atexit.register(shutil.rmtree, mine, ignore_errors=True)
        _dirs[root] = mine
    return mine


def _remove_if_abandoned(path: Path) -> None:
    try:
        owner = (path / OWNER).open("a")
    except OSError:  # no owner file: not a directory this module made whole
        shutil.rmtree(path, ignore_errors=True)
        return
    with owner:
        try:
            fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # its process is alive
        shutil.rmtree(path, ignore_errors=True)


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
    _databases.append((name, db))
    return db


def usage() -> tuple[dict[str, tuple[int, int]], int]:
    """What this process's databases take, as RocksDB counts it: by name, (bytes in files
    on disk, bytes in write buffers); and the bytes in their shared block cache."""
    by_name: dict[str, tuple[int, int]] = {}
    for name, db in list(_databases):
        try:
            size = db.property_int_value("rocksdb.total-sst-files-size") or 0
            buffered = db.property_int_value("rocksdb.cur-size-all-mem-tables") or 0
        except rocksdict.DbClosedError:  # an app stopped in this process (tests)
            _databases.remove((name, db))
            continue
        files, buffers = by_name.get(name, (0, 0))
        by_name[name] = (files + size, buffers + buffered)
    cache = _shared.get("cache")
    return by_name, (cache.get_usage() if cache is not None else 0)
