"""The on-demand eligibility lookup over real loopback HTTP: answers, timeouts, outages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web

from appfirst.broker import free_port
from appfirst.providers.eligibility import PATIENTS_REPORT, HttpEligibilityLookup
from appfirst.providers.scenario import Scenario
from appfirst.providers.simulator import Simulator, serve

pytestmark = pytest.mark.integration


@pytest.fixture
async def simulator_url() -> AsyncIterator[str]:
    port = free_port()
    sim = Simulator(Scenario(app_share=1.0, notifications_share=1.0), "http://127.0.0.1:1", "t")
    runner = await serve(sim, "127.0.0.1", port)
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_a_patient_in_the_report_is_eligible(simulator_url: str) -> None:
    async with httpx.AsyncClient() as client:
        lookup = HttpEligibilityLookup(client, simulator_url, timeout=2)
        found = await lookup.lookup("9434765919", "A1")
    assert found is not None and found.has_nhs_app and found.notifications_enabled


async def test_a_slow_api_gives_unknown_within_the_timeout() -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.json_response({"patients": []})

    app = web.Application()
    app.router.add_get(PATIENTS_REPORT, slow)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with httpx.AsyncClient() as client:
            lookup = HttpEligibilityLookup(client, f"http://127.0.0.1:{port}", timeout=0.2)
            loop = asyncio.get_running_loop()
            started = loop.time()
            assert await lookup.lookup("9434765919", "A1") is None
            assert loop.time() - started < 1.0
    finally:
        await runner.cleanup()


async def test_an_absent_api_opens_the_circuit() -> None:
    async with httpx.AsyncClient() as client:
        lookup = HttpEligibilityLookup(client, f"http://127.0.0.1:{free_port()}", timeout=0.5)
        for _ in range(lookup.breaker.threshold):
            assert await lookup.lookup("9434765919", "A1") is None
        assert lookup.breaker.opened_at is not None
