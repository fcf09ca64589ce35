"""What every benchmark needs: topics loaded fast, workers started as real processes, and
the moment a consumer group has caught up, read from its committed offsets.

Workers run exactly as in production (``python -m appfirst worker``), against the
embedded broker, with ``APPFIRST_PROVIDERS=off`` so that only our code is measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from appfirst.admin import ensure_topics
from appfirst.codecs.json_codec import JsonCodec
from appfirst.ports import free_port
from appfirst.processes import die_with_parent, spawn, stop
from appfirst.settings import Settings, settings_from_env
from appfirst.topics.models import Event

ROOT = Path(__file__).resolve().parent.parent
Record = tuple[bytes, bytes, int | None]  # key, value, timestamp in ms (None: now)
PAGE_SIZE = 10_000


@dataclass
class Bench:
    broker_url: str
    prefix: str
    workdir: Path
    partitions: int = 4
    extra: dict[str, str] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def env(self, **overrides: str) -> dict[str, str]:
        return {
            "APPFIRST_BROKER": self.broker_url,
            "APPFIRST_TOPIC_PREFIX": self.prefix,
            "APPFIRST_PROVIDERS": "off",
            "APPFIRST_PARTITIONS": str(self.partitions),
            "APPFIRST_SESSION_TIMEOUT_SECONDS": "6",
            "APPFIRST_COMMIT_INTERVAL_SECONDS": "0.5",
            "APPFIRST_METRICS_PUBLISH_SECONDS": "2",
            "APPFIRST_LOG_LEVEL": "warning",
            "APPFIRST_DATA_DIR": str(self.workdir / "data"),
            **self.extra,
            **overrides,
        }

    @property
    def settings(self) -> Settings:
        return settings_from_env(self.env())

    async def create_topics(self) -> None:
        await ensure_topics(self.settings)

    async def produce(self, topic: str, records: Iterable[Record]) -> int:
        """Write records as fast as the broker takes them; wait for every acknowledgement."""
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.bootstrap,
            acks="all",
            linger_ms=20,
            max_batch_size=1024 * 1024,
        )
        await producer.start()
        name = self.settings.topic(topic)
        sent = 0
        try:
            pending: list[asyncio.Future[object]] = []
            for key, value, ts in records:
                pending.append(await producer.send(name, value, key=key, timestamp_ms=ts))
                sent += 1
                if len(pending) >= PAGE_SIZE:
                    await asyncio.gather(*pending)
                    pending.clear()
            await asyncio.gather(*pending)
        finally:
            await producer.stop()
        return sent

    async def produce_paced(
        self, topic: str, events: Iterable[tuple[bytes, Event]], rate: float
    ) -> dict[bytes, int]:
        """Write events at ``rate`` per second, each encoded and stamped as it goes; the
        time each was handed to the producer, in ms, by key."""
        producer = AIOKafkaProducer(bootstrap_servers=self.settings.bootstrap, linger_ms=1)
        await producer.start()
        name = self.settings.topic(topic)
        stamps: dict[bytes, int] = {}
        pending = []
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            for n, (key, event) in enumerate(events):
                ahead = start + n / rate - loop.time()
                if ahead > 0:
                    await asyncio.sleep(ahead)
                event = event.model_copy(update={"requested_at": datetime.now(UTC)})
                stamps[key] = int(time.time() * 1000)
                pending.append(
                    await producer.send(name, JsonCodec(type(event)).encode(event), key=key)
                )
            await asyncio.gather(*pending)
        finally:
            await producer.stop()
        return stamps

    def start(self, args: list[str], name: str, **env: str) -> tuple[subprocess.Popen[bytes], int]:
        port = free_port()
        proc = spawn(args, self.env(APPFIRST_WEB_PORT=str(port), **env), self.workdir / name)
        self.procs.append(proc)
        return proc, port

    def start_worker(
        self, name: str = "worker.log", **env: str
    ) -> tuple[subprocess.Popen[bytes], int]:
        return self.start(["worker"], name, **env)

    def start_module(self, module: str, name: str, **env: str) -> subprocess.Popen[bytes]:
        """``python -m module`` from the repository root (the bare-Faust ceiling)."""
        port = free_port()
        log = open(self.workdir / name, "ab")  # noqa: SIM115 - the child owns it
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", module],
                env={**os.environ, **self.env(APPFIRST_WEB_PORT=str(port), **env)},
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        finally:
            log.close()
        self.procs.append(proc)
        return proc

    async def wait_ready(self, port: int, timeout: float = 90) -> float:
        """Seconds until the worker's /readyz says ready."""
        start = time.perf_counter()
        async with httpx.AsyncClient(timeout=1) as client:
            while time.perf_counter() - start < timeout:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                        return time.perf_counter() - start
                await asyncio.sleep(0.1)
        raise RuntimeError(f"worker on port {port} not ready; see {self.workdir}")

    def stop_all(self) -> None:
        for proc in self.procs:
            stop(proc)
        self.procs.clear()


async def partitions(consumer: AIOKafkaConsumer, name: str) -> list[TopicPartition]:
    """Every partition of a topic, with fresh metadata (topics are created just before)."""
    await consumer._client.force_metadata_update()
    return [TopicPartition(name, p) for p in sorted(consumer.partitions_for_topic(name) or ())]


async def end_offsets(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> dict[Any, int]:
    """Each partition's true end. Tansu's list-offsets answers the last batch's base offset
    plus one, not its last offset plus one (measured: 1 where a 1,283-record batch ended at
    1,283), so the listed end is confirmed by reading that last batch through. Without this
    a load written in large batches looks consumed as soon as its first record is."""
    listed = await consumer.end_offsets(tps)
    ends = dict(listed)
    unread = {tp for tp in tps if listed[tp] > 0}
    consumer.assign(tps)
    for tp in unread:
        consumer.seek(tp, listed[tp] - 1)
    deadline = time.perf_counter() + 60
    while unread:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"last batches of {sorted(map(str, unread))} not read in 60 s")
        batch = await consumer.getmany(*unread, timeout_ms=500, max_records=100_000)
        for tp, records in batch.items():
            # A fetch returns whole batches: the first one read holds the listed base.
            ends[tp] = max(ends[tp], records[-1].offset + 1)
            unread.discard(tp)
    return ends


async def lag(settings: Settings, group: str, topics: Iterable[str]) -> int:
    """Records of ``topics`` the group has not committed yet. (Tansu answers the admin
    client's OffsetFetch in a shape aiokafka cannot read; a consumer's ``committed`` works.)
    """
    names = [settings.topic(t) for t in topics]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [tp for name in names for tp in await partitions(consumer, name)]
        done = {tp: await consumer.committed(tp) or 0 for tp in tps}
        listed = await consumer.end_offsets(tps)
        behind = sum(max(0, end - done[tp]) for tp, end in listed.items())
        if behind:
            return behind
        # Caught up by the listed ends, which can trail: confirm against the true ends.
        ends = await end_offsets(consumer, tps)
        return sum(max(0, end - done[tp]) for tp, end in ends.items())
    finally:
        await consumer.stop()


async def wait_caught_up(
    settings: Settings, group: str, topics: Iterable[str], timeout: float, poll: float = 0.25
) -> float:
    """perf_counter() time at which the group had committed every record of ``topics``."""
    topics = list(topics)
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if await lag(settings, group, topics) == 0:
            return time.perf_counter()
        await asyncio.sleep(poll)
    raise TimeoutError(f"group {group} still behind on {topics} after {timeout:.0f} s")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
