"""``appfirst demo``: the whole pipeline on the embedded broker, in about two minutes.

Time is compressed 120 times: one simulated hour (the individual fallback deadline) is 30
real seconds, so fallbacks happen while you watch. The summary is read back from Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import tempfile
from collections import Counter
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from appfirst.broker import EmbeddedBroker
from appfirst.demo.batch import final_status, run_batch
from appfirst.demo.summary import Tally, expected_rate
from appfirst.demo.summary import render as summary
from appfirst.demo.traffic import Pilot
from appfirst.jobs.eligibility_sync import sync
from appfirst.jobs.reconcile import reconcile
from appfirst.ports import free_port
from appfirst.processes import spawn, stop
from appfirst.providers.auth import ensure_sandbox_key
from appfirst.providers.published_pilot import published_scenario
from appfirst.reader import TopicReader
from appfirst.report import gather, render
from appfirst.settings import Settings, settings_from_env

TIME_SCALE = 120.0  # simulated seconds per real second
HORIZONS = (30, 90)  # 1 and 3 simulated hours
DEMO_NHS_APP_RATE = 200
DEMO_NOTIFY_RATE = 30_000


def demo_env(broker: str, web_port: int, sim_port: int, data_dir: str) -> dict[str, str]:
    return {
        "APPFIRST_BROKER": broker,
        "APPFIRST_TOPIC_PREFIX": "demo.",
        "APPFIRST_WEB_PORT": str(web_port),
        "APPFIRST_SIMULATOR_URL": f"http://127.0.0.1:{sim_port}",
        "APPFIRST_FALLBACK_INDIVIDUAL_SECONDS": str(3600 / TIME_SCALE),
        "APPFIRST_FALLBACK_BP_MONITORING_SECONDS": str(10800 / TIME_SCALE),
        # Batch deadlines are a day; the demo shortens them further so some fire.
        "APPFIRST_FALLBACK_BATCH_SECONDS": "45",
        "APPFIRST_METRIC_HORIZONS": ",".join(str(h) for h in HORIZONS),
        "APPFIRST_METRICS_PUBLISH_SECONDS": "1",
        "APPFIRST_SESSION_TIMEOUT_SECONDS": "6",
        "APPFIRST_DATA_DIR": data_dir,
        "APPFIRST_NHS_APP_PRIVATE_KEY_PATH": str(Path(data_dir) / "sandbox-nhs-app-key.pem"),
        # A day squeezed into a minute sends faster than a real day: the sandbox limits and
        # ours are raised together (the defaults, 20/s and 3,000/min, are the real ones).
        "APPFIRST_NHS_APP_RATE_PER_SECOND": str(DEMO_NHS_APP_RATE),
        "APPFIRST_NOTIFY_RATE_PER_MINUTE": str(DEMO_NOTIFY_RATE),
        # Quiet logs by default; APPFIRST_LOG_LEVEL=info shows each fallback by message id.
        "APPFIRST_LOG_LEVEL": os.environ.get("APPFIRST_LOG_LEVEL", "warning"),
    }


def run_demo(*, messages: int, seconds: float, drain: float, seed: int) -> int:
    console = Console()
    try:
        return asyncio.run(_interruptible(_run(console, messages, seconds, drain, seed)))
    except (KeyboardInterrupt, asyncio.CancelledError):
        console.print("[yellow]interrupted: everything started has been stopped[/]")
        return 130


async def _interruptible(work: Coroutine[Any, Any, int]) -> int:
    """Run ``work``; Ctrl-C or SIGTERM cancels it, and cancels it again each second.

    A library may swallow one cancellation (a client retrying a request, a flush on
    stop): repeating it keeps Ctrl-C prompt, and the ``finally`` blocks that stop the
    children and the broker still run.
    """
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupted.set)
    waiter = asyncio.ensure_future(interrupted.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
    finally:
        waiter.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return task.result()


async def _run(console: Console, messages: int, seconds: float, drain: float, seed: int) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="appfirst-demo-"))
    web_port, sim_port = free_port(), free_port()
    scenario = workdir / "scenario.json"
    # Patients behave as in the published pilot (providers/published_pilot.py).
    scenario_model = published_scenario(
        seed=seed,
        time_scale=TIME_SCALE,
        nhs_app_rate_per_second=DEMO_NHS_APP_RATE,
        notify_rate_per_minute=DEMO_NOTIFY_RATE,
        callback_loss_share=0.02,
    )
    scenario.write_text(scenario_model.model_dump_json(), encoding="utf-8")
    procs: list[subprocess.Popen[bytes]] = []
    with EmbeddedBroker() as broker:
        env = demo_env(broker.url, web_port, sim_port, str(workdir / "data"))
        settings = settings_from_env(env)
        ensure_sandbox_key(Path(env["APPFIRST_NHS_APP_PRIVATE_KEY_PATH"]))
        try:
            console.print(f"[bold]appfirst demo[/] broker {broker.url}, logs in {workdir}")
            procs.append(spawn(["worker"], env, workdir / "worker.log"))
            procs.append(
                spawn(
                    [
                        "simulator",
                        "--port",
                        str(sim_port),
                        "--callback-url",
                        f"http://127.0.0.1:{web_port}",
                        "--scenario",
                        str(scenario),
                    ],
                    env,
                    workdir / "simulator.log",
                )
            )
            await _wait_http(f"http://127.0.0.1:{web_port}/readyz", 60)
            await _wait_http(f"http://127.0.0.1:{sim_port}/_sim/sends", 30)
            pilot = Pilot.make(seed)
            synced = await sync(settings, [p.ods_code for p in pilot.practices])
            console.print(
                f"eligibility sync: {synced.practices} practices, {synced.patients} NHS App "
                f"users ({synced.notifications_enabled} with notifications on)"
            )
            tally = Tally()
            await _drive(console, settings, pilot, messages, seconds, drain, tally)
            batch_id, batch_state = await run_batch(console, settings, web_port, pilot)
            fixed = await reconcile(settings, datetime.now(UTC).date())
            console.print(
                f"receipts reconciliation: {fixed.in_report} NHS App receipts in today's "
                f"report, {sum(fixed.filled.values())} filled in whose callback never came"
            )
            if batch_state != "done":
                batch_state = await final_status(console, settings, web_port, batch_id)
            report = workdir / "pilot-report.html"
            pilot_data = await gather(settings, time_scale=TIME_SCALE)
            tally.metrics.update(pilot_data.metrics)  # the summary shows what the report shows
            report.write_text(
                render(
                    pilot_data,
                    price_per_fragment=settings.sms_fragment_price,
                    deadline_seconds=settings.fallback_individual_seconds * TIME_SCALE,
                ),
                encoding="utf-8",
            )
            async with httpx.AsyncClient(timeout=5) as client:
                sends = (await client.get(f"http://127.0.0.1:{sim_port}/_sim/sends")).json()
            expected = {
                (arm, h): expected_rate(
                    tally, scenario_model, settings.deadlines(), arm, h, TIME_SCALE
                )
                for arm in ("treatment", "control")
                for h in HORIZONS
            }
            console.print(summary(tally, sends, HORIZONS, TIME_SCALE, expected))
            console.print(f"pilot report: {report} (times in simulated hours)")
            ok = tally.both_arms() and tally.all_channels() and tally.fallbacks_total() > 0
            # Every rate published (some messages matured) within its tolerance of what
            # the scenario implies; a short run may have nothing matured at 3 h yet.
            ok = ok and all(
                e is not None and e.agrees(m.response_rate or 0)
                for (arm, h), e in expected.items()
                if (m := tally.rate(arm, h)) is not None
            )
            ok = ok and batch_state in ("sending", "done")
            return 0 if ok else 1
        finally:
            for proc in procs:
                stop(proc)


async def _wait_http(url: str, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with httpx.AsyncClient(timeout=1.0) as client:
        while loop.time() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                await client.get(url)
                return
            await asyncio.sleep(0.3)
    raise RuntimeError(f"worker did not come up at {url}; see its log")


async def _drive(
    console: Console,
    settings: Settings,
    pilot: Pilot,
    messages: int,
    seconds: float,
    drain: float,
    tally: Tally,
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, linger_ms=5)
    reader = TopicReader(settings, ["dispatches", "fallbacks", "pilot-metrics", "dead-letter"])
    await producer.start()
    await reader.start()
    try:
        for record in pilot.setup_records():
            await producer.send(settings.topic(record.topic), record.value, key=record.key.encode())
        await producer.flush()
        columns = (
            TextColumn("{task.description:<22}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[note]}"),
        )
        with Progress(*columns, console=console, transient=False) as progress:
            sent = progress.add_task("send requests", total=messages, note="")
            routed = progress.add_task("dispatches", total=messages, note="")
            waited = progress.add_task("deadlines and metrics", total=int(drain), note="")
            loop = asyncio.get_running_loop()
            start = loop.time()
            for produced, batch in enumerate(pilot.messages(messages), start=1):
                for record in batch:
                    await producer.send(
                        settings.topic(record.topic), record.value, key=record.key.encode()
                    )
                ahead = start + seconds * produced / messages - loop.time()
                if ahead > 0:
                    await producer.flush()
                    await _follow(reader, tally, ahead)
                progress.update(sent, completed=produced)
                progress.update(
                    routed,
                    completed=tally.dispatch_count(),
                    note=f"fallbacks {tally.fallbacks_total()}",
                )
            await producer.flush()
            # At least ``drain`` seconds, and on until the worker has decided every request
            # (at most ``drain`` more): figures read from a worker still behind would count
            # messages whose answers it has not read yet.
            end = loop.time() + drain
            while loop.time() < end or (tally.decided() < messages and loop.time() < end + drain):
                await _follow(reader, tally, 1.0)
                progress.update(
                    routed,
                    completed=tally.dispatch_count(),
                    note=f"fallbacks {tally.fallbacks_total()}",
                )
                progress.update(
                    waited,
                    completed=int(drain - (end - loop.time())),
                    note=f"metrics {len(tally.metrics)}",
                )
    finally:
        await producer.stop()
        await reader.stop()


async def _follow(reader: TopicReader, tally: Tally, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while True:
        async for name, event in reader.poll(timeout=min(0.2, max(0.0, end - loop.time()))):
            tally.add(name, event)
        if loop.time() >= end:
            return


__all__ = ["Counter", "run_demo"]
