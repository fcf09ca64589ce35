"""A batch of per-message rows as one changelog record (internal; ``streams/rowlog.py``).

A per-message table (``message-rows``, ``routed``, ``sends``) writes the rows a step of a
worker changed in one partition as one record, not one record per row: a record per row
was a record per event for ``message-rows`` alone. The record's key names the batch
(``#rows/<partition>/<writer>/<number>``, numbered from 0 by each writer in each partition:
no message id can start with ``#``, so a batch key never meets a row's key written by an
earlier release), its value is the rows:

    b"AFRB1" then, per row: key length (2 bytes), key (UTF-8),
                            value length (4 bytes; 0xFFFFFFFF for a deleted row), value

Big-endian, a row's value its JSON bytes as the table holds them. A null value (a Kafka
tombstone) under a batch key says the batch is no longer needed: every row in it has been
written again in a later batch, or deleted (``streams/rowlog.py``).
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Iterable, Iterator

MAGIC = b"AFRB1"
BATCH_PREFIX = "#rows/"
DELETED = 0xFFFFFFFF
_KEY = struct.Struct(">H")
_VALUE = struct.Struct(">I")
# A quarter of the producer's 1 MiB request limit: a batch is cut into records of this.
RECORD_BYTES = 256 * 1024

Row = tuple[str, bytes | None]  # a row's key, and its value or None for a deletion


def is_batch_key(key: object) -> bool:
    return isinstance(key, str) and key.startswith(BATCH_PREFIX)


def new_writer() -> str:
    """A name for one table in one process: its batches are numbered under it, from 0 in
    each partition, so that no two writers' batches share a key."""
    return secrets.token_hex(12)


def batch_key(partition: int, writer: str, seq: int) -> str:
    return f"{BATCH_PREFIX}{partition}/{writer}/{seq}"


def parse_batch_key(key: str) -> tuple[str, int]:
    """A batch key's writer and number; ``ValueError`` if it is not one."""
    _, _, rest = key.removeprefix(BATCH_PREFIX).partition("/")
    writer, _, seq = rest.partition("/")
    if not writer or not seq.isdigit():
        raise ValueError(f"not a batch key: {key[:60]!r}")
    return writer, int(seq)


def _size(key: bytes, value: bytes | None) -> int:
    return _KEY.size + len(key) + _VALUE.size + (0 if value is None else len(value))


def encode(rows: Iterable[Row], limit: int = RECORD_BYTES) -> Iterator[tuple[bytes, int]]:
    """``rows`` as records of at most ``limit`` bytes (a row longer than that alone in
    one), each with how many rows it holds."""
    parts: list[bytes] = [MAGIC]
    size, count = len(MAGIC), 0
    for key, value in rows:
        raw = key.encode()
        if len(raw) > 0xFFFF:
            raise ValueError(f"a row key of {len(raw):,} bytes")
        step = _size(raw, value)
        if count and size + step > limit:
            yield b"".join(parts), count
            parts, size, count = [MAGIC], len(MAGIC), 0
        parts.append(_KEY.pack(len(raw)))
        parts.append(raw)
        if value is None:
            parts.append(_VALUE.pack(DELETED))
        else:
            parts.append(_VALUE.pack(len(value)))
            parts.append(value)
        size += step
        count += 1
    if count:
        yield b"".join(parts), count


def decode(data: bytes) -> list[Row]:
    """The rows of one record, in the order written; ``ValueError`` if it is not one."""
    if not data.startswith(MAGIC):
        raise ValueError("not a batch of rows")
    view = memoryview(data)
    rows: list[Row] = []
    at, end = len(MAGIC), len(data)
    while at < end:
        if at + _KEY.size > end:
            raise ValueError("a batch of rows cut short")
        (length,) = _KEY.unpack_from(view, at)
        at += _KEY.size
        key = bytes(view[at : at + length]).decode()
        at += length
        if at + _VALUE.size > end:
            raise ValueError("a batch of rows cut short")
        (size,) = _VALUE.unpack_from(view, at)
        at += _VALUE.size
        if size == DELETED:
            rows.append((key, None))
            continue
        if at + size > end:
            raise ValueError("a batch of rows cut short")
        rows.append((key, bytes(view[at : at + size])))
        at += size
    return rows
