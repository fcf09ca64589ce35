"""The simulator as strict as the real providers, over real loopback HTTP (no Kafka): a
repeated reference is a second message, and the fault switches of ``/_sim/*`` (an outage
of one provider, a latency per provider, a token endpoint that refuses)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from appfirst.errors import ProviderUnavailable, Unauthorised
from appfirst.ports import free_port
from appfirst.providers import factory
from appfirst.providers.auth import SignedJwtAuth, notify_token
from appfirst.providers.nhsapp import NhsAppClient
from appfirst.providers.notify import LIST_PATH, NotifyClient
from appfirst.providers.scenario import Scenario
from appfirst.providers.simulator import Credentials, Simulator, serve
from appfirst.settings import Settings
from tests import loopback

from .test_providers_http import app_message, sandbox_settings, sms_message

pytestmark = pytest.mark.integration


class Sandbox:
    """A simulator on loopback, our clients for it, and a receiver of its callbacks."""

    def __init__(self, sim: Simulator, settings: Settings, received: list[dict[str, Any]]):
        self.sim = sim
        self.settings = settings
        self.url = settings.provider_urls()[2]  # Notify's root: the simulator's own root
        self.received = received
        self.http = loopback.client(timeout=httpx.Timeout(10.0))
        nhs_app_url, _, notify_url = settings.provider_urls()
        self.auth: SignedJwtAuth = factory.nhs_app_auth(settings, self.http)
        # The clients without the gateway: one attempt each, so a test sees each answer.
        self.nhs_app = NhsAppClient(self.http, nhs_app_url, "appfirst", self.auth)
        self.notify = NotifyClient(
            self.http,
            notify_url,
            settings.notify_api_key,
            sms_template_id="t",
            email_template_id="t",
        )

    async def harness(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return await self.http.post(self.url + path, json=body)

    async def sends(self) -> dict[str, Any]:
        r = await self.http.get(self.url + "/_sim/sends", params={"references": 1})
        return dict(r.json())


Start = Callable[..., Awaitable[Sandbox]]


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Start]:
    cleanups: list[Callable[[], Awaitable[None]]] = []

    async def _start(**scenario: object) -> Sandbox:
        received: list[dict[str, Any]] = []

        async def callback(request: web.Request) -> web.Response:
            received.append({"path": request.path, **await request.json()})
            return web.json_response({"status": "accepted"}, status=202)

        receiver = web.Application()
        receiver.router.add_post("/callbacks/{kind}", callback)
        receiver_runner = web.AppRunner(receiver, access_log=None)
        await receiver_runner.setup()
        receiver_port = free_port()
        await web.TCPSite(receiver_runner, "127.0.0.1", receiver_port).start()
        cleanups.append(receiver_runner.cleanup)

        port = free_port()
        settings = sandbox_settings(tmp_path, port)
        sim = Simulator(
            Scenario(**{"send_callbacks": False, **scenario}),  # type: ignore[arg-type]
            f"http://127.0.0.1:{receiver_port}",
            Credentials.from_settings(settings),
        )
        cleanups.append((await serve(sim, "127.0.0.1", port)).cleanup)
        box = Sandbox(sim, settings, received)
        cleanups.append(box.http.aclose)
        return box

    yield _start
    for cleanup in reversed(cleanups):
        await cleanup()


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


# --- a repeat is a second message ------------------------------------------------------
async def test_a_repeated_notify_reference_is_a_second_sms_delivered_and_counted(
    sandbox: Start,
) -> None:
    box = await sandbox(send_callbacks=True, delivery_seconds=0.01, sms_failed_share=0.0)
    first = await box.notify.send(sms_message(1))
    second = await box.notify.send(sms_message(1))  # the same reference again
    await box.notify.send(sms_message(2))
    assert first and second and first != second  # a new notification, with its own id

    sends = await box.sends()
    assert sends["total"] == 3 and sends["distinct_references"] == 2
    assert sends["duplicates"] == 1 and sends["counts"]["duplicates_sms"] == 1
    assert sends["references"]["s-1"]["calls"] == 2
    assert sends["references"]["s-1"]["ids"] == [first, second]
    assert sends["references"]["s-2"]["calls"] == 1
    assert sends["by_channel"] == {"sms": 3}

    # Each one is delivered: a receipt per notification, under the one reference.
    await until(lambda: len(box.received) >= 3, 10, "three delivery receipts")
    receipts = [r for r in box.received if r["reference"] == "s-1"]
    assert sorted(r["id"] for r in receipts) == sorted([first, second])

    # And Notify lists both under the reference (newest first, as Notify lists them).
    token = notify_token(box.settings.notify_api_key, time.time())
    found = await box.http.get(
        box.url + LIST_PATH,
        params={"reference": "s-1"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert [n["id"] for n in found.json()["notifications"]] == [second, first]


async def test_a_repeated_nhs_app_request_id_is_a_second_message(sandbox: Start) -> None:
    box = await sandbox()
    first = await box.nhs_app.send(app_message(1))
    second = await box.nhs_app.send(app_message(1))
    assert first and second and first != second
    sends = await box.sends()
    assert sends["references"]["m-1"]["calls"] == 2
    assert sends["counts"]["duplicates_nhs_app"] == 1 and sends["duplicates"] == 1
    assert sends["by_channel"] == {"nhs_app": 2}


# --- an outage of one provider ---------------------------------------------------------
async def test_an_outage_can_take_down_one_provider_and_not_the_other(sandbox: Start) -> None:
    box = await sandbox()
    r = await box.harness("/_sim/outage", {"seconds": 60, "status": 503, "provider": "nhs_app"})
    assert r.status_code == 200
    with pytest.raises(ProviderUnavailable) as down:
        await box.nhs_app.send(app_message(1))
    assert down.value.status == 503
    assert await box.notify.send(sms_message(1))  # Notify is up

    await box.harness("/_sim/outage", {"seconds": 0, "provider": "nhs_app"})  # over
    await box.harness("/_sim/outage", {"seconds": 60, "status": 500, "provider": "notify"})
    with pytest.raises(ProviderUnavailable) as notify_down:
        await box.notify.send(sms_message(2))
    assert notify_down.value.status == 500
    assert await box.nhs_app.send(app_message(2))  # the NHS App is up again

    sends = await box.sends()
    assert set(sends["references"]) == {"m-2", "s-1"}
    assert sends["counts"]["outage_refused"] == 2
    assert sends["outages"]["notify"]["status"] == 500
    assert sends["outage_until"] == 0.0  # no outage of all providers was asked for


async def test_an_outage_of_all_is_the_default_and_an_unknown_provider_is_refused(
    sandbox: Start,
) -> None:
    box = await sandbox()
    assert (await box.harness("/_sim/outage", {"provider": "sms"})).status_code == 400
    await box.harness("/_sim/outage", {"seconds": 60, "status": 502})
    for send in (box.nhs_app.send(app_message(1)), box.notify.send(sms_message(1))):
        with pytest.raises(ProviderUnavailable) as down:
            await send
        assert down.value.status == 502
    assert (await box.sends())["total"] == 0


# --- latency per provider --------------------------------------------------------------
async def test_latency_slows_one_providers_sends_without_blocking_other_requests(
    sandbox: Start,
) -> None:
    box = await sandbox()
    delay = 1.0
    r = await box.harness("/_sim/latency", {"provider": "nhs_app", "seconds": delay})
    assert r.json()["latency"] == {"nhs_app": delay}
    await box.auth.headers()  # the token endpoint is not a send: not delayed, not timed

    began = time.monotonic()
    slow = [asyncio.ensure_future(box.nhs_app.send(app_message(i))) for i in range(5)]
    await until(lambda: len(box.sim.sends) == 5, 5, "the five NHS App sends to arrive")
    # While they wait out their latency, Notify and the harness answer at once.
    assert await box.notify.send(sms_message(1))
    assert (await box.sends())["total"] == 6
    assert not any(s.done() for s in slow)
    ids = await asyncio.gather(*slow)
    elapsed = time.monotonic() - began
    assert all(ids)
    assert elapsed >= delay
    assert elapsed < 2 * delay  # the five waited side by side, not one after another

    await box.harness("/_sim/latency", {"provider": "all", "seconds": 0})
    assert (await box.sends())["latency"] == {"nhs_app": 0.0, "notify": 0.0}


# --- the token endpoint refuses --------------------------------------------------------
async def test_a_refusing_token_endpoint_revokes_tokens_and_renewal_fails(
    sandbox: Start,
) -> None:
    box = await sandbox()
    assert await box.nhs_app.send(app_message(1))  # a token, fetched and working
    r = await box.harness("/_sim/token", {"refuse": True, "status": 401})
    assert r.json() == {"token_refusal": 401}

    # The token held is revoked: the send gets 401 and the client drops the token...
    with pytest.raises(Unauthorised) as revoked:
        await box.nhs_app.send(app_message(2))
    assert revoked.value.status == 401
    # ...and renewing it is refused: the auth layer turns that into "unavailable, retry
    # in 30 s" (providers/auth.py), so the gateway holds the message rather than drop it.
    with pytest.raises(ProviderUnavailable) as renewal:
        await box.nhs_app.send(app_message(2))
    assert renewal.value.provider == "nhs_app_auth"
    assert renewal.value.status == 401 and renewal.value.retry_after == 30.0
    assert not isinstance(renewal.value, Unauthorised)
    token = await box.http.post(box.url + "/oauth2/token", data={"grant_type": "x"})
    assert token.status_code == 401 and token.json()["error"] == "invalid_client"
    assert await box.notify.send(sms_message(1))  # Notify's auth is its own

    await box.harness("/_sim/token", {"refuse": False})
    assert await box.nhs_app.send(app_message(2))  # renewed, and sent once
    sends = await box.sends()
    assert set(sends["references"]) == {"m-1", "m-2", "s-1"}
    assert sends["counts"]["tokens"] == 2
    assert sends["counts"]["unauthorised"] == 1
    assert sends["counts"]["token_refused"] == 2  # the renewal and the direct request


async def test_a_refusing_token_endpoint_can_answer_another_status(sandbox: Start) -> None:
    box = await sandbox()
    await box.harness("/_sim/token", {"refuse": True, "status": 403})
    with pytest.raises(ProviderUnavailable) as refused:
        await box.auth.headers()
    assert refused.value.status == 403
