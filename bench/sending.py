"""The send path as users pay for it: dispatches sent through real HTTP to the simulator,
at the providers' real limits (NHS App 20 a second, Notify 3,000 a minute), with a latency
stage per provider call, and through an NHS App outage.

Dispatches are written straight to ``dispatches`` and a worker of role ``dispatcher`` sends
them, so that only the send path is measured. Rates come from the simulator's own record
of when each send arrived (first to last).
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from appfirst.ports import free_port
from appfirst.providers.auth import ensure_sandbox_key
from appfirst.topics.models import Dispatch

from .harness import Bench, Record
from .loads import _encode, _nhs

NHS_APP_LIMIT = 20.0
NOTIFY_LIMIT_PER_MINUTE = 3000.0


def _dispatches(prefix: str, count: int, channel: str, *, deadline: float = 3600.0) -> list[Record]:
    now = datetime.now(UTC)
    out = []
    for n in range(count):
        mid = f"{prefix}-{n:06d}"
        d = Dispatch(
            message_id=mid,
            channel=channel,  # type: ignore[arg-type]
            reason="nhs_app_enabled" if channel == "nhs_app" else "sms_only_type",
            dispatched_at=now,
            ods_code="B00000",
            arm="treatment",
            origin="individual",
            message_type="sms_with_response" if channel == "nhs_app" else "confirmation",
            fallback_due_at=now + timedelta(seconds=deadline) if channel == "nhs_app" else None,
            sms_fragments=1 if channel == "sms" else None,
            nhs_number=_nhs(n),
            mobile="+447911123456",
            body="Your GP practice has sent you a message.",
        )
        out.append((mid.encode(), _encode(d), None))
    return out


class SendBench:
    """One prefix: a simulator process and one dispatcher worker."""

    def __init__(self, broker: str, workdir: Path, name: str, **env: str) -> None:
        key = workdir / "sandbox-nhs-app-key.pem"
        ensure_sandbox_key(key)
        self.sim_port = free_port()
        self.bench = Bench(
            broker,
            f"{name}.",
            workdir,
            extra={
                "APPFIRST_PROVIDERS": "simulator",
                "APPFIRST_SIMULATOR_URL": f"http://127.0.0.1:{self.sim_port}",
                "APPFIRST_NHS_APP_PRIVATE_KEY_PATH": str(key),
                "APPFIRST_ROLE": "dispatcher",
                "APPFIRST_DATA_DIR": str(workdir / f"data-{name}"),
                **env,
            },
        )
        self.name = name
        self.url = f"http://127.0.0.1:{self.sim_port}"

    async def start(self) -> None:
        scenario = self.bench.workdir / f"scenario-{self.name}.json"
        scenario.write_text(
            json.dumps(
                {
                    "send_callbacks": False,
                    "nhs_app_rate_per_second": NHS_APP_LIMIT,
                    "notify_rate_per_minute": NOTIFY_LIMIT_PER_MINUTE,
                }
            ),
            encoding="utf-8",
        )
        self.bench.start(
            [
                "simulator",
                "--port",
                str(self.sim_port),
                "--callback-url",
                "http://127.0.0.1:1",
                "--scenario",
                str(scenario),
            ],
            f"simulator-{self.name}.log",
        )
        await self.bench.create_topics()
        _, port = self.bench.start_worker(f"worker-{self.name}.log")
        await self.bench.wait_ready(port)
        async with httpx.AsyncClient(timeout=2) as client:
            for _ in range(200):
                try:
                    await client.get(self.url + "/_sim/sends")
                    return
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)

    async def harness(self, path: str, body: dict[str, Any]) -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            (await client.post(self.url + path, json=body)).raise_for_status()

    async def references(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.get(self.url + "/_sim/sends", params={"references": 1})
            return dict(answer.json()["references"])

    async def wait_for(self, wanted: set[str], timeout: float) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while True:
            refs = await self.references()
            if wanted <= set(refs) or time.monotonic() > end:
                return refs
            await asyncio.sleep(0.5)

    def stop(self) -> None:
        self.bench.stop_all()


def _rate(refs: dict[str, Any], wanted: set[str]) -> float:
    times = sorted(refs[r]["received_at"] for r in wanted if r in refs)
    if len(times) < 2 or times[-1] <= times[0]:
        return 0.0
    return (len(times) - 1) / (times[-1] - times[0])


async def throughput(broker: str, workdir: Path, latency: float, count: int) -> dict[str, Any]:
    """SMS and NHS App sends a second, one worker, each call answered after ``latency``."""
    tag = f"send{int(latency * 1000)}"
    run = SendBench(broker, workdir, tag)
    try:
        await run.start()
        for provider in ("nhs_app", "notify"):
            await run.harness("/_sim/latency", {"provider": provider, "seconds": latency})
        sms = _dispatches(f"{tag}-sms", count, "sms")
        app = _dispatches(f"{tag}-app", count // 2, "nhs_app")
        await run.bench.produce("dispatches", sms + app)
        wanted_sms = {k.decode() for k, _, _ in sms}
        wanted_app = {k.decode() for k, _, _ in app}
        refs = await run.wait_for(wanted_sms | wanted_app, timeout=count / 10 + 120)
        repeats = sum(max(0, v.get("calls", 1) - 1) for v in refs.values())
        return {
            "latency_seconds": latency,
            "sms": count,
            "nhs_app": count // 2,
            "sms_per_second": _rate(refs, wanted_sms),
            "nhs_app_per_second": _rate(refs, wanted_app),
            "missing": len((wanted_sms | wanted_app) - set(refs)),
            "repeats": repeats,
        }
    finally:
        run.stop()


async def outage(
    broker: str, workdir: Path, count: int, outage_seconds: float, give_up: float
) -> dict[str, Any]:
    """The NHS App answers 503 throughout; SMS-only and NHS App messages arrive together.
    How many SMS-only messages go in 30 s, and how soon after being given up each NHS App
    message's fallback SMS reaches the simulator."""
    run = SendBench(
        broker,
        workdir,
        "outage",
        APPFIRST_NHS_APP_GIVE_UP_SECONDS=str(give_up),
        APPFIRST_ROLE="all",
        APPFIRST_SWEEP_INTERVAL_SECONDS="0.25",
    )
    try:
        await run.start()
        await run.harness(
            "/_sim/outage", {"seconds": outage_seconds, "status": 503, "provider": "nhs_app"}
        )
        for provider in ("nhs_app", "notify"):
            await run.harness("/_sim/latency", {"provider": provider, "seconds": 0.1})
        sms = _dispatches("out-sms", count, "sms")
        app = _dispatches("out-app", count, "nhs_app")
        began = time.time()
        await run.bench.produce(
            "dispatches", [r for pair in zip(app, sms, strict=True) for r in pair]
        )
        wanted_sms = {k.decode() for k, _, _ in sms}
        fallbacks = {f"{k.decode()}/fallback" for k, _, _ in app}
        refs = await run.wait_for(wanted_sms, timeout=30)
        in_30 = sum(1 for r in wanted_sms if r in refs and refs[r]["received_at"] - began <= 30)
        refs = await run.wait_for(fallbacks, timeout=give_up + 120)
        after = sorted(refs[f]["received_at"] - began for f in fallbacks if f in refs)
        return {
            "messages": count,
            "outage_seconds": outage_seconds,
            "give_up_seconds": give_up,
            "sms_sent_within_30s": in_30,
            "fallbacks_sent": len(after),
            "fallback_after_dispatch_p50_seconds": after[len(after) // 2] if after else None,
            "fallback_after_dispatch_max_seconds": after[-1] if after else None,
            "fallback_late_after_give_up_max_seconds": (after[-1] - give_up) if after else None,
            "nhs_app_sent_during_outage": sum(1 for k, _, _ in app if k.decode() in refs),
        }
    finally:
        run.stop()
