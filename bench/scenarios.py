"""The measurements of ``make bench``, each on its own topic prefix of one embedded broker."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer
from prometheus_client.parser import text_string_to_metric_families

from appfirst.codecs import Decoder
from appfirst.topics.models import Dispatch, Fallback

from .harness import Bench, cpu_seconds, end_offsets, partitions, rss_bytes, wait_caught_up
from .loads import Traffic, paced_requests, pending_dispatches, recorded_day

# What the worker's consumer group reads (the broadcast tables read outside the group).
WORKER_TOPICS = (
    "send-requests",
    "eligibility",
    "practice-settings",
    "router-by-patient",
    "dispatches",
    "delivery-receipts",
    "read-receipts",
    "responses",
    "fallbacks",
    "metric-facts",
    "practice-stats",
)
_dispatch = Decoder(Dispatch)
SETUP_TOPICS = ("practice-settings", "eligibility")
LOAD_TOPICS = ("send-requests", "delivery-receipts", "read-receipts", "responses")


async def _load(bench: Bench, traffic: Traffic, topics: tuple[str, ...]) -> int:
    sent = await asyncio.gather(*(bench.produce(t, traffic.topics[t]) for t in topics))
    return sum(sent)


async def pipeline(
    broker: str, workdir: Path, traffic: Traffic, workers: int = 1
) -> dict[str, Any]:
    """Router, tracker, metrics (and the dispatcher, off) on the whole load, from the
    moment it starts arriving until the group has committed every record."""
    bench = Bench(broker, f"pipe{workers}.", workdir)
    group = f"{bench.prefix}worker"
    try:
        await bench.create_topics()
        await _load(bench, traffic, SETUP_TOPICS)
        ports = [bench.start_worker(f"pipeline-{workers}-{i}.log")[1] for i in range(workers)]
        for port in ports:
            await bench.wait_ready(port)
        await wait_caught_up(bench.settings, group, SETUP_TOPICS, timeout=120)
        cpu0 = sum(cpu_seconds(p.pid) for p in bench.procs)
        before = await _records_by_topic(bench)
        start = time.perf_counter()
        events = await _load(bench, traffic, LOAD_TOPICS)
        end = await wait_caught_up(bench.settings, group, WORKER_TOPICS, timeout=900)
        cpu = sum(cpu_seconds(p.pid) for p in bench.procs) - cpu0
        seconds = end - start
        after = await _records_by_topic(bench)
        # What the worker wrote for the load: every topic's growth (changelogs included),
        # less the load itself. The figure that sets the pipeline's cost against bare Faust.
        written = {t: n - before.get(t, 0) for t, n in after.items() if n > before.get(t, 0)}
        internal = sum(written.values()) - events
        return {
            "workers": workers,
            "messages": traffic.messages,
            "events": events,
            "seconds": seconds,
            "messages_per_second": traffic.messages / seconds,
            "events_per_second": events / seconds,
            "worker_cpu_seconds": cpu,
            "rss_bytes": [rss_bytes(p.pid) for p in bench.procs],
            "records_by_topic": dict(sorted(written.items(), key=lambda kv: -kv[1])),
            "internal_records": internal,
            "internal_records_per_event": internal / events,
        }
    finally:
        bench.stop_all()


async def bare(broker: str, workdir: Path, traffic: Traffic) -> dict[str, Any]:
    """The same events through a Faust agent that only decodes them."""
    return await _plain(broker, workdir, traffic, "bare", SETUP_TOPICS + LOAD_TOPICS)


async def hops(broker: str, workdir: Path, traffic: Traffic) -> dict[str, Any]:
    """The same events carried by plain Faust over the pipeline's hops, with no work of
    appfirst's own (``bench/hops.py``): the ceiling of any pipeline of this shape here."""
    topics = SETUP_TOPICS + LOAD_TOPICS + ("router-by-patient", "dispatches")
    result = await _plain(broker, workdir, traffic, "hops", topics)
    # Committed everything, and carried every request over every hop: else the floor
    # would be measured on less work than it claims.
    requests = len(traffic.topics["send-requests"])
    for topic in ("router-by-patient", "dispatches", "message-status"):
        carried = sum((await _end_offsets(Bench(broker, "hops.", workdir), topic)).values())
        if carried != requests:
            raise RuntimeError(f"hops carried {carried} of {requests} requests to {topic}")
    return result


async def _plain(
    broker: str, workdir: Path, traffic: Traffic, module: str, topics: tuple[str, ...]
) -> dict[str, Any]:
    """``bench.<module>``, a plain Faust worker of group ``<module>``, timed from the first
    load record produced until it has committed every record of ``topics``."""
    bench = Bench(broker, f"{module}.", workdir)
    group = f"{bench.prefix}{module}"
    try:
        await bench.create_topics()
        await _load(bench, traffic, SETUP_TOPICS)
        proc = bench.start_module(f"bench.{module}", f"{module}.log")
        await wait_caught_up(bench.settings, group, SETUP_TOPICS, timeout=120)
        cpu0 = cpu_seconds(proc.pid)
        start = time.perf_counter()
        events = await _load(bench, traffic, LOAD_TOPICS)
        end = await wait_caught_up(bench.settings, group, topics, timeout=900)
        seconds = end - start
        return {
            "events": events,
            "seconds": seconds,
            "events_per_second": events / seconds,
            "cpu_seconds": cpu_seconds(proc.pid) - cpu0,
        }
    finally:
        bench.stop_all()


async def routing(broker: str, workdir: Path, traffic: Traffic, rounds: int = 3) -> dict[str, Any]:
    """Routing alone: the same send requests through appfirst's router (its agents only,
    ``bench/routing_worker.py``) and through a straightforward Faust router
    (``bench/plain_router.py``), each timed from the first request produced to the last
    dispatch on ``dispatches``. The two take turns, ``rounds`` times each, and the ratio is
    of their medians: one run each moves by some 5% with what else the machine does."""
    ours: list[dict[str, Any]] = []
    plain: list[dict[str, Any]] = []
    for i in range(rounds):
        ours.append(
            await _route_only(
                broker, workdir, traffic, f"route{i}.", "bench.routing_worker", "worker"
            )
        )
        plain.append(
            await _route_only(broker, workdir, traffic, f"plain{i}.", "bench.plain_router", "plain")
        )
    decided = {json.dumps(r["dispatches_by_channel"]) for r in ours + plain}
    if len(decided) != 1:
        raise RuntimeError(f"the two routers decided differently: {sorted(decided)}")
    ours_rate = statistics.median(r["messages_per_second"] for r in ours)
    plain_rate = statistics.median(r["messages_per_second"] for r in plain)
    return {
        "messages": ours[0]["messages"],
        "dispatches_by_channel": ours[0]["dispatches_by_channel"],
        "appfirst_per_second": ours_rate,
        "plain_per_second": plain_rate,
        "ratio": ours_rate / plain_rate,
        "appfirst": ours,
        "plain": plain,
    }


async def _route_only(
    broker: str, workdir: Path, traffic: Traffic, prefix: str, module: str, group: str
) -> dict[str, Any]:
    bench = Bench(broker, prefix, workdir)
    requests = traffic.topics["send-requests"]
    try:
        await bench.create_topics()
        await _load(bench, traffic, SETUP_TOPICS)
        proc = bench.start_module(module, f"{prefix}log")
        await wait_caught_up(bench.settings, f"{prefix}{group}", SETUP_TOPICS, timeout=120)
        before = sum((await _end_offsets(bench, "dispatches")).values())
        cpu0 = cpu_seconds(proc.pid)
        start = time.perf_counter()
        await bench.produce("send-requests", requests)
        end = await _until_records(bench, "dispatches", before + len(requests), timeout=900)
        seconds = end - start
        cpu = cpu_seconds(proc.pid) - cpu0
        channels: dict[str, int] = {}
        for record in await _read_new(bench, "dispatches", len(requests), timeout=120):
            channel = _dispatch.decode(record.value).channel
            channels[channel] = channels.get(channel, 0) + 1
        return {
            "messages": len(requests),
            "seconds": seconds,
            "messages_per_second": len(requests) / seconds,
            "worker_cpu_seconds": cpu,
            # The same decisions both ways, or the comparison is not of the same routing.
            "dispatches_by_channel": dict(sorted(channels.items())),
        }
    finally:
        bench.stop_all()


async def _until_records(bench: Bench, topic: str, want: int, timeout: float) -> float:
    """perf_counter() time at which ``topic`` held ``want`` records."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if sum((await _end_offsets(bench, topic)).values()) >= want:
            return time.perf_counter()
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{topic}: fewer than {want} records after {timeout:.0f} s")


def now() -> datetime:
    return datetime.now(UTC)


async def _read_new(
    bench: Bench, topic: str, want: int, timeout: float, since: dict[Any, int] | None = None
) -> list[Any]:
    """The next ``want`` records of a topic (from ``since`` offsets, else the start)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bench.settings.bootstrap, group_id=None)
    await consumer.start()
    found: list[Any] = []
    try:
        tps = await partitions(consumer, bench.settings.topic(topic))
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, (since or {}).get(tp, 0))
        deadline = time.perf_counter() + timeout
        while len(found) < want and time.perf_counter() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for records in batch.values():
                found.extend(records)
    finally:
        await consumer.stop()
    if len(found) < want:
        raise TimeoutError(f"{topic}: {len(found)} of {want} records after {timeout:.0f} s")
    return found


async def _end_offsets(bench: Bench, topic: str) -> dict[Any, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bench.settings.bootstrap, group_id=None)
    await consumer.start()
    try:
        tps = await partitions(consumer, bench.settings.topic(topic))
        return await end_offsets(consumer, tps)
    finally:
        await consumer.stop()


async def _records_by_topic(bench: Bench) -> dict[str, int]:
    """Records in every topic of this measurement's prefix (Faust's changelogs too), by
    topic name less the prefix."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bench.settings.bootstrap, group_id=None)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        names = sorted(t for t in await consumer.topics() if t.startswith(bench.prefix))
        tps = [tp for name in names for tp in await partitions(consumer, name)]
        ends = await end_offsets(consumer, tps)
    finally:
        await consumer.stop()
    totals: dict[str, int] = {}
    for tp, end in ends.items():
        short = tp.topic.removeprefix(bench.prefix)
        totals[short] = totals.get(short, 0) + end
    return totals


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def routing_latency(
    broker: str, workdir: Path, rate: float, seconds: float
) -> dict[str, Any]:
    """Send request to dispatch, at a fixed offered load: each request is stamped as it is
    produced, each dispatch by the broker's record time (the worker's produce time)."""
    bench = Bench(broker, "lat.", workdir)
    traffic = Traffic(0).build()
    try:
        await bench.create_topics()
        await _load(bench, traffic, SETUP_TOPICS)
        _, port = bench.start_worker("latency.log")
        await bench.wait_ready(port)
        await wait_caught_up(bench.settings, f"{bench.prefix}worker", SETUP_TOPICS, timeout=120)
        count = int(rate * seconds)
        produced = await bench.produce_paced("send-requests", paced_requests(count), rate)
        records = await _read_new(bench, "dispatches", count, timeout=600)
        latencies = []
        for record in records:
            sent_ms = produced.get(record.key)
            if sent_ms is not None:
                latencies.append((record.timestamp - sent_ms) / 1000)
        return {
            "offered_per_second": rate,
            "messages": count,
            "p50_seconds": _percentile(latencies, 0.5),
            "p99_seconds": _percentile(latencies, 0.99),
            "max_seconds": max(latencies),
        }
    finally:
        bench.stop_all()


async def idle(broker: str, workdir: Path, seconds: float = 20.0) -> dict[str, Any]:
    """What a worker of every part costs with nothing to do: CPU over ``seconds`` once it is
    ready and has read its setup topics. An agent or timer that polls shows up here (a
    batching stream that woke every 5 ms once cost 7.5% of a core), and it is paid by every
    worker of a fleet at night and by every test that starts one."""
    bench = Bench(broker, "idle.", workdir)
    group = f"{bench.prefix}worker"
    try:
        await bench.create_topics()
        proc, port = bench.start_worker("idle.log")
        await bench.wait_ready(port)
        await wait_caught_up(bench.settings, group, SETUP_TOPICS, timeout=120)
        await asyncio.sleep(5)  # past the start's own work (recovery, first timers)
        cpu0 = cpu_seconds(proc.pid)
        await asyncio.sleep(seconds)
        cpu = cpu_seconds(proc.pid) - cpu0
        return {"seconds": seconds, "cpu_seconds": cpu, "share_of_a_core": cpu / seconds}
    finally:
        bench.stop_all()


async def deadlines(
    broker: str, workdir: Path, pending: int, due: int, window: tuple[float, float]
) -> dict[str, Any]:
    """Fallback timeliness and memory with ``pending`` deadlines waiting: the worker takes
    them in, then ``due`` more fall due while they wait."""
    bench = Bench(broker, "dl.", workdir)
    group = f"{bench.prefix}worker"
    deadline = 3600.0
    try:
        await bench.create_topics()
        proc, port = bench.start_worker("deadlines.log")
        await bench.wait_ready(port)
        await asyncio.sleep(2)
        base = rss_bytes(proc.pid)
        start = time.perf_counter()
        # Pending ones fall due after an hour or more: none within the run. Taken in by
        # halves: the second half's RSS is what one more pending deadline costs, the first
        # half's also what taking in any load costs once (buffers, caches, first calls).
        half = pending // 2
        rss = []
        for name, count in (("pending", half), ("pending-2", pending - half)):
            await bench.produce(
                "dispatches", pending_dispatches(count, (3600, 7200), now(), deadline, name)
            )
            await wait_caught_up(bench.settings, group, ("dispatches",), timeout=3600)
            rss.append(rss_bytes(proc.pid))
        ingest = time.perf_counter() - start
        await asyncio.sleep(3)
        loaded = rss_bytes(proc.pid)
        before = await _end_offsets(bench, "fallbacks")
        await bench.produce("dispatches", pending_dispatches(due, window, now(), deadline, "due"))
        records = await _read_new(bench, "fallbacks", due, timeout=window[1] + 120, since=before)
        decoder = Decoder(Fallback)
        lateness = []
        for record in records:
            fb = decoder.decode(record.value)
            lateness.append((fb.emitted_at - fb.due_at).total_seconds())
        return {
            "pending": pending,
            "ingest_seconds": ingest,
            "ingest_per_second": pending / ingest,
            "fallbacks_measured": len(lateness),
            "lateness_p50_seconds": _percentile(lateness, 0.5),
            "lateness_p99_seconds": _percentile(lateness, 0.99),
            "lateness_max_seconds": max(lateness),
            "early_fallbacks": sum(1 for x in lateness if x < 0),
            "rss_baseline_bytes": base,
            "rss_loaded_bytes": loaded,
            "rss_bytes_per_pending": (loaded - base) / pending,
            "rss_half_bytes": rss[0],
            "rss_bytes_per_pending_second_half": (loaded - rss[0]) / (pending - half),
        }
    finally:
        bench.stop_all()


async def retention(broker: str, workdir: Path, rounds: int, per_round: int) -> dict[str, Any]:
    """Memory over a long run when every row ends: ``rounds`` times, ``per_round`` NHS App
    dispatches fall due at once, get their fallbacks, and settle; with a 5 s keep window
    the worker's rows return to none after each round, and its RSS should stop growing."""
    keep = 5.0
    bench = Bench(
        broker,
        "ret.",
        workdir,
        extra={
            "APPFIRST_KEEP_SETTLED_SECONDS": str(keep),
            "APPFIRST_KEEP_SENT_METRICS_SECONDS": str(keep),
            "APPFIRST_RETENTION_INTERVAL_SECONDS": "1",
        },
    )
    try:
        await bench.create_topics()
        proc, port = bench.start_worker("retention.log")
        await bench.wait_ready(port)
        rss: list[int] = []
        peaks: list[int] = []
        drained: list[float] = []
        for n in range(rounds):
            before = await _end_offsets(bench, "fallbacks")
            due = pending_dispatches(per_round, (0.5, 2.0), now(), 3600.0, f"r{n}")
            await bench.produce("dispatches", due)
            await _read_new(bench, "fallbacks", per_round, timeout=600, since=before)
            peaks.append(sum((await table_rows(port)).values()))
            start = time.perf_counter()
            await _until_no_rows(port, timeout=keep + 120)
            drained.append(time.perf_counter() - start)
            rss.append(rss_bytes(proc.pid))
        half = rounds // 2
        return {
            "rounds": rounds,
            "messages_per_round": per_round,
            "keep_seconds": keep,
            "rows_after_fallbacks": peaks,
            "seconds_to_no_rows": drained,
            "rss_bytes_after_round": rss,
            # From the middle of the run to its end: the worker's warm-up is behind it.
            "rss_growth_second_half_bytes_per_message": (rss[-1] - rss[half - 1])
            / (per_round * (rounds - half)),
        }
    finally:
        bench.stop_all()


async def table_rows(port: int) -> dict[str, int]:
    """``appfirst_table_rows`` by table, as the worker exposes it."""
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    rows: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "appfirst_table_rows":
            for sample in family.samples:
                rows[sample.labels["table"]] = int(sample.value)
    return rows


async def _until_no_rows(port: int, timeout: float) -> None:
    deadline = time.perf_counter() + timeout
    while sum((await table_rows(port)).values()) > 0:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"rows left after {timeout:.0f} s: {await table_rows(port)}")
        await asyncio.sleep(0.5)


async def replay(broker: str, workdir: Path, sample: int, day_messages: int) -> dict[str, Any]:
    """A recorded day in replay mode: ``sample`` messages drawn evenly from a day of
    ``day_messages`` (dispatches and their receipts, in time order per topic); the time
    for the whole day is the sample's time scaled by day_messages / sample."""
    bench = Bench(broker, "replay.", workdir, extra={"APPFIRST_CLOCK": "replay"})
    group = f"{bench.prefix}worker"
    day = recorded_day(sample, now())
    try:
        await bench.create_topics()
        events = 0
        for topic, records in day.items():
            events += await bench.produce(topic, records)
        _, port = bench.start_worker("replay.log")
        start = time.perf_counter()
        await bench.wait_ready(port)
        end = await wait_caught_up(bench.settings, group, tuple(day), timeout=3600)
        seconds = end - start
        per_second = events / seconds
        day_seconds = seconds * day_messages / sample
        return {
            "sample_messages": sample,
            "events": events,
            "seconds": seconds,
            "events_per_second": per_second,
            "day_messages": day_messages,
            "projected_day_seconds": day_seconds,
            "times_real_time": 86400 / day_seconds,
        }
    finally:
        bench.stop_all()
