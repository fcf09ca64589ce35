"""The send path's bounds at the gateway, against the simulator over loopback HTTP: the NHS
App is given up (so the fallback SMS goes at once) when it refuses our credentials or has
not accepted a message in time; SMS is never given up; sends run side by side."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from appfirst import telemetry
from appfirst.errors import GivenUp
from appfirst.providers import factory

from .test_providers_http import Start, app_message, sms_message
from .test_providers_http import start as start  # the in-process simulator fixture

pytestmark = pytest.mark.integration


def _gauge(provider: str) -> float:
    value = telemetry.registry.get_sample_value(
        "appfirst_provider_misconfigured", {"provider": provider}
    )
    return value or 0.0


async def test_refused_credentials_give_up_the_nhs_app_at_once(
    start: Start, tmp_path: Path
) -> None:
    from appfirst.providers.auth import generate_private_key_pem

    wrong = tmp_path / "not-registered.pem"
    wrong.write_bytes(generate_private_key_pem())
    sim, settings = await start({"APPFIRST_NHS_APP_PRIVATE_KEY_PATH": str(wrong)})
    gateway = factory.gateway(settings)
    try:
        with pytest.raises(GivenUp) as first:
            await asyncio.wait_for(gateway.send(app_message(1)), 10)
        assert first.value.reason == "configuration"
        assert _gauge("nhs_app") == 1
        refused = sim.counts["token_refused"]
        # The next messages give up without calling: no hammering of a refusing endpoint.
        for i in range(2, 12):
            with pytest.raises(GivenUp):
                await asyncio.wait_for(gateway.send(app_message(i)), 1)
        assert sim.counts["token_refused"] == refused
        # SMS is a different lane and provider: unaffected.
        assert await asyncio.wait_for(gateway.send(sms_message(1)), 10)
    finally:
        await gateway.aclose()
    assert {s.channel for s in sim.sends.values()} == {"sms"}


async def test_an_outage_gives_the_nhs_app_up_in_bounded_time(start: Start) -> None:
    sim, settings = await start(client_env={"APPFIRST_NHS_APP_GIVE_UP_SECONDS": "2"})
    sim.outage_until = time.time() + 60
    gateway = factory.gateway(settings)
    try:
        began = time.monotonic()
        with pytest.raises(GivenUp) as given_up:
            await asyncio.wait_for(gateway.send(app_message(1)), 15)
        assert given_up.value.reason in {"timeout", "outage"}
        assert time.monotonic() - began >= 2
        # Behind an outage older than the give-up time, the next message goes at once.
        with pytest.raises(GivenUp) as behind:
            await asyncio.wait_for(gateway.send(app_message(2)), 2)
        assert behind.value.reason == "outage"
        # The outage ends: the first call that succeeds puts the NHS App back.
        sim.outage_until = 0
        gateway.give_up = None  # (so the probe is not itself given up)
        assert await asyncio.wait_for(gateway.send(app_message(3)), 15)
        assert gateway.failing_since("nhs_app") is None
    finally:
        await gateway.aclose()
    assert set(sim.sends) == {"m-3"}


async def test_sms_is_never_given_up(start: Start) -> None:
    sim, settings = await start(client_env={"APPFIRST_NHS_APP_GIVE_UP_SECONDS": "1"})
    sim.outage_until = time.time() + 4
    gateway = factory.gateway(settings)
    try:
        assert await asyncio.wait_for(gateway.send(sms_message(1)), 30)
    finally:
        await gateway.aclose()
    assert sim.counts["outage_refused"] > 0
    assert set(sim.sends) == {"s-1"}


async def test_a_share_paces_the_bucket(start: Start) -> None:
    _, settings = await start()
    gateway = factory.gateway(settings)
    try:
        full = gateway.rate("notify")
        gateway.set_share(0.5)
        assert gateway.rate("notify") == pytest.approx(full / 2)
        gateway.set_share(1.0)
        assert gateway.rate("notify") == pytest.approx(full)
    finally:
        await gateway.aclose()
