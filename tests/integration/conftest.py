"""Fixtures for tests on the real embedded broker with real worker processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from appfirst.admin import ensure_topics
from appfirst.broker import EmbeddedBroker
from appfirst.codecs import rowbatch
from appfirst.codecs.avro import AvroSingleObjectCodec
from appfirst.codecs.json_codec import JsonCodec
from appfirst.ports import free_port, listens
from appfirst.processes import kill, spawn, stop
from appfirst.reader import read_until
from appfirst.settings import settings_from_env
from appfirst.topics.models import Eligibility, Event
from tests import loopback
from tests.keys import sandbox_key

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as running:
        yield running


EXIT_CRASH_ONLY = 70  # a worker that cannot go on safely exits with this (streams/router.py)
TEST_NHS_APP_RATE = 5000
TEST_NOTIFY_RATE = 300_000


class Stack:
    """One test's slice of the broker: its own topic prefix, workers and helpers."""

    def __init__(self, broker: EmbeddedBroker, tmp: Path, **overrides: str) -> None:
        self.prefix = f"t{uuid.uuid4().hex[:8]}."
        self.tmp = tmp
        self.env: dict[str, str] = {
            "APPFIRST_BROKER": broker.url,
            "APPFIRST_TOPIC_PREFIX": self.prefix,
            "APPFIRST_PROVIDERS": "off",
            "APPFIRST_SESSION_TIMEOUT_SECONDS": "6",
            "APPFIRST_SWEEP_INTERVAL_SECONDS": "0.2",
            "APPFIRST_METRICS_PUBLISH_SECONDS": "0.5",
            "APPFIRST_LOG_LEVEL": "info",
            # One sandbox key for every worker and the simulator of this stack.
            "APPFIRST_NHS_APP_PRIVATE_KEY_PATH": str(tmp / "sandbox-nhs-app-key.pem"),
            # Tests offer thousands of messages in seconds; the real limits (20/s, 3,000/min)
            # are tested on their own (test_providers_http.py).
            "APPFIRST_NHS_APP_RATE_PER_SECOND": str(TEST_NHS_APP_RATE),
            "APPFIRST_NOTIFY_RATE_PER_MINUTE": str(TEST_NOTIFY_RATE),
            **overrides,
        }
        sandbox_key(Path(self.env["APPFIRST_NHS_APP_PRIVATE_KEY_PATH"]))
        self.settings = settings_from_env(self.env)
        self.workers: list[tuple[subprocess.Popen[bytes], int, Path]] = []
        self.others: list[subprocess.Popen[bytes]] = []
        # The first worker's web port: where the simulator posts its callbacks.
        self.callback_port = free_port()
        self._producer: AIOKafkaProducer | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self.self_exits = 0

    async def start_worker(self, **extra: str) -> tuple[subprocess.Popen[bytes], int]:
        if not self.workers:
            await ensure_topics(self.settings)
        n = len(self.workers)
        port = self.callback_port if n == 0 else free_port()
        log = self.tmp / f"worker{n}.log"
        env = {
            **self.env,
            "APPFIRST_WEB_PORT": str(port),
            "APPFIRST_DATA_DIR": str(self.tmp / f"data{n}"),
            **extra,
        }
        proc = spawn(["worker"], env, log)
        self.workers.append((proc, port, log))
        await self.wait_ready(port, proc, log)
        if self._supervisor is None:
            self._supervisor = asyncio.get_running_loop().create_task(self._supervise())
        return proc, port

    async def start_simulator(self, **scenario: object) -> str:
        """The provider simulator as its own process, with this scenario; returns its URL."""
        port = free_port()
        path = self.tmp / f"scenario{port}.json"
        limits = {
            "nhs_app_rate_per_second": TEST_NHS_APP_RATE,
            "notify_rate_per_minute": TEST_NOTIFY_RATE,
        }
        path.write_text(json.dumps({**limits, **scenario}), encoding="utf-8")
        callback = f"http://127.0.0.1:{self.callback_port}"
        proc = spawn(
            ["simulator", "--port", str(port), "--callback-url", callback, "--scenario", str(path)],
            self.env,
            self.tmp / f"simulator{port}.log",
        )
        self.others.append(proc)
        url = f"http://127.0.0.1:{port}"
        self.env["APPFIRST_SIMULATOR_URL"] = url
        deadline = time.monotonic() + 20
        async with loopback.client(timeout=1.0) as client:
            while time.monotonic() < deadline:
                try:
                    await client.get(url + "/_sim/sends")
                    return url
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)
        raise TimeoutError("simulator did not start")

    async def sends(self, references: bool = False) -> dict[str, Any]:
        async with loopback.client(timeout=5.0) as client:
            url = self.env["APPFIRST_SIMULATOR_URL"] + "/_sim/sends"
            return dict((await client.get(url, params={"references": int(references)})).json())

    async def wait_ready(
        self, port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60
    ) -> None:
        deadline = time.monotonic() + timeout
        async with loopback.client(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(f"worker exited:\n{log.read_text()[-3000:]}")
                try:
                    if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                        # Ready is said by whoever listens: it must be this worker.
                        if listens(proc.pid, port) is False:
                            raise RuntimeError(f"another process listens on port {port}")
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        raise TimeoutError(f"worker not ready:\n{log.read_text()[-3000:]}")

    async def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            # The topics as the worker makes them (partitions, compaction), also when a test
            # publishes before its first worker starts (settings, so that none races a request).
            await ensure_topics(self.settings)
            self._producer = AIOKafkaProducer(bootstrap_servers=self.settings.bootstrap)
            await self._producer.start()
        return self._producer

    async def publish(
        self, topic: str, key: str, value: Event | bytes, *, avro: bool = False
    ) -> None:
        if isinstance(value, Event):
            codec: Any = AvroSingleObjectCodec(type(value)) if avro else JsonCodec(type(value))
            value = codec.encode(value)
        producer = await self.producer()
        await producer.send_and_wait(self.settings.topic(topic), value, key=key.encode())

    async def publish_many(self, records: list[tuple[str, str, Event]]) -> None:
        """(topic, key, event) records, JSON, without waiting on each one."""
        producer = await self.producer()
        for topic, key, event in records:
            value = JsonCodec(type(event)).encode(event)
            await producer.send(self.settings.topic(topic), value, key=key.encode())
        await producer.flush()

    async def publish_eligibility(self, records: list[Eligibility], timeout: float = 30) -> None:
        """Publish eligibility records and wait until the workers hold them all: a request
        routed before its patient's record is in the table goes by SMS (rule 7)."""
        await self.publish_many([("eligibility", e.nhs_number, e) for e in records])
        await self.absorbed("eligibility", {e.nhs_number for e in records}, timeout)

    async def absorbed(self, table: str, keys: set[str], timeout: float = 30) -> None:
        """Wait until the workers' ``table`` has a row for every key. Its changelog is
        written after the table itself, so a key seen there is in the table."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not keys <= (found := await self.read_raw_changelog(table)):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{table}: {len(keys - found)} of {len(keys)} rows missing")
            await asyncio.sleep(0.1)

    async def read_raw(self, topic: str) -> list[bytes]:
        """Every value on a topic as bytes, as written."""
        return [r.value for r in await self.read_records(topic)]

    async def read_records(self, topic: str) -> list[Any]:
        """Every record on a topic (aiokafka ``ConsumerRecord``: partition, offset, value)."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.bootstrap, group_id=None)
        await consumer.start()
        try:
            name = self.settings.topic(topic)
            tps = [TopicPartition(name, p) for p in range(self.settings.partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            values: list[Any] = []
            while True:
                positions = [await consumer.position(tp) for tp in tps]
                if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                    return values
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    values += records
        finally:
            await consumer.stop()

    async def accepted(self) -> dict[str, float]:
        """When the NHS App accepted each message, as the dispatcher said on
        ``send-outcomes`` (the earliest, epoch seconds): where its deadline starts."""
        found: dict[str, float] = {}
        for r in await self.read_records("send-outcomes"):
            outcome = json.loads(r.value)
            if outcome["channel"] != "nhs_app":
                continue
            at = datetime.fromisoformat(outcome["at"]).timestamp()
            key = r.key.decode()
            found[key] = min(at, found.get(key, at))
        return found

    async def read_raw_changelog(self, table: str, *, live: bool = False) -> set[str]:
        """The keys written to a table's changelog (JSON strings); with ``live``, only
        those whose last record is not a tombstone (the rows a recovery would hold). For a
        per-message table, the keys of the rows in its batches (``codecs/rowbatch.py``),
        each row's last value read as recovery reads it."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.bootstrap, group_id=None)
        await consumer.start()
        try:
            name = f"{self.prefix}worker-{table}-changelog"
            parts = consumer.partitions_for_topic(name) or set()
            if not parts:
                await consumer._client.force_metadata_update()
                parts = consumer.partitions_for_topic(name) or set()
            tps = [TopicPartition(name, p) for p in parts]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            keys: dict[str, bool] = {}
            while True:
                positions = [await consumer.position(tp) for tp in tps]
                if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                    return {k for k, alive in keys.items() if alive or not live}
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for r in records:
                        if not r.key:
                            continue
                        key = json.loads(r.key)
                        if not rowbatch.is_batch_key(key):
                            keys[key] = r.value is not None
                        elif r.value is not None:  # a batch tombstoned: its rows are later
                            keys |= {k: v is not None for k, v in rowbatch.decode(r.value)}
        finally:
            await consumer.stop()

    async def changelog_batches(self, table: str) -> tuple[int, int]:
        """A per-message table's changelog as compaction would leave it: the rows in its
        batches not tombstoned (what a recovery reads), and how many were tombstoned."""
        live: dict[str, int] = {}
        tombstoned = 0
        for r in await self.read_records(f"worker-{table}-changelog"):
            key = json.loads(r.key)
            if not rowbatch.is_batch_key(key):
                continue
            if r.value is None:
                live.pop(key, None)
                tombstoned += 1
            else:
                live[key] = len(rowbatch.decode(r.value))
        return sum(live.values()), tombstoned

    async def group_progress(self, topic: str) -> dict[int, tuple[int | None, int]]:
        """Per partition of ``topic``: the workers' committed offset and the end offset."""
        group = f"{self.prefix}worker"
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            name = self.settings.topic(topic)
            tps = [TopicPartition(name, p) for p in range(self.settings.partitions)]
            ends = await consumer.end_offsets(tps)
            return {tp.partition: (await consumer.committed(tp), ends[tp]) for tp in tps}
        finally:
            await consumer.stop()

    async def readiness(self) -> list[str]:
        """Each worker's /readyz answer, or why there is none."""
        answers = []
        async with loopback.client(timeout=3.0) as client:
            for n, (proc, port, _) in enumerate(self.workers):
                if proc.poll() is not None:
                    answers.append(f"worker{n}: exited {proc.returncode}")
                    continue
                try:
                    r = await client.get(f"http://127.0.0.1:{port}/readyz")
                    answers.append(f"worker{n}: {r.status_code} {r.text}")
                except httpx.HTTPError as exc:
                    answers.append(f"worker{n}: {type(exc).__name__}")
        return answers

    async def task_dumps(self) -> list[str]:
        """Each live worker's asyncio tasks that wait in our code (streams/taskdump.py)."""
        marks = {}
        for proc, _, log in self.workers:
            if proc.poll() is None:
                marks[log] = log.stat().st_size
                proc.send_signal(signal.SIGUSR1)
        await asyncio.sleep(2)
        lines: list[str] = []
        for log, start in marks.items():
            with log.open("rb") as f:
                f.seek(start)
                for raw in f.read().decode(errors="replace").splitlines():
                    if "awaiting" in raw and "appfirst" in raw:
                        lines.append(f"{log.name}: {json.loads(raw).get('message', raw)}")
        return lines

    def kill_worker(self, n: int) -> None:
        """SIGKILL: a crash, with no chance to commit or flush."""
        kill(self.workers[n][0])

    def stop_worker(self, n: int) -> None:
        """SIGTERM: a clean shutdown (scale-in)."""
        stop(self.workers[n][0])

    async def restart_worker(self, n: int) -> None:
        old, port, log = self.workers[n]
        if old.poll() is None:
            return  # the supervisor restarted it already
        env = {
            **self.env,
            "APPFIRST_WEB_PORT": str(port),
            "APPFIRST_DATA_DIR": str(self.tmp / f"data{n}"),
        }
        proc = spawn(["worker"], env, log)
        self.workers[n] = (proc, port, log)
        await self.wait_ready(port, proc, log)

    async def read(
        self,
        names: list[str],
        done: Callable[[list[tuple[str, Event]]], bool],
        timeout: float = 30,
        *,
        stall: float | None = None,
    ) -> list[tuple[str, Event]]:
        return await read_until(self.settings, names, done, timeout, stall=stall)

    async def _supervise(self) -> None:
        """What production's supervisor (compose ``restart``, Kubernetes) does: a worker
        that exits on its own, crash-only (code 70), is started again."""
        while True:
            await asyncio.sleep(0.5)
            for n, (proc, _, log) in enumerate(self.workers):
                if proc.poll() == EXIT_CRASH_ONLY:
                    self.self_exits += 1
                    with log.open("a") as f:
                        f.write("\n[test supervisor] worker exited 70; restarting\n")
                    await self.restart_worker(n)

    async def close(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
        if self._producer is not None:
            await self._producer.stop()
        for proc, _, _ in self.workers:
            stop(proc)
        for proc in self.others:
            stop(proc)

    def logs(self) -> str:
        return "\n".join(log.read_text(errors="replace") for _, _, log in self.workers)


@pytest.fixture
async def stack_factory(
    broker: EmbeddedBroker, tmp_path: Path
) -> AsyncIterator[Callable[..., Stack]]:
    stacks: list[Stack] = []

    def make(**overrides: str) -> Stack:
        (tmp_path / f"s{len(stacks)}").mkdir()
        stack = Stack(broker, tmp_path / f"s{len(stacks)}", **overrides)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        await stack.close()


@pytest.fixture(autouse=True)
def _no_proxy() -> None:
    os.environ.pop("HTTP_PROXY", None)
    os.environ.pop("http_proxy", None)
