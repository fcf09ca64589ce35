"""Provider clients against the simulator over real loopback HTTP (no Kafka): auth, the
rate limit under a burst, 429 handling, outages, and the paged reports."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from appfirst.errors import ProviderUnavailable, SendAbandoned, SentUnconfirmed, Unauthorised
from appfirst.ports import free_port
from appfirst.providers import factory
from appfirst.providers.auth import generate_private_key_pem
from appfirst.providers.base import Outbound
from appfirst.providers.eligibility import PracticeReportLookup
from appfirst.providers.notify import NotifyClient
from appfirst.providers.scenario import Scenario
from appfirst.providers.simulator import Credentials, Simulator, serve
from appfirst.rules.nhs_number import check_digit
from appfirst.settings import Settings, settings_from_env
from tests import loopback
from tests.keys import sandbox_key

pytestmark = pytest.mark.integration

Start = Callable[..., Awaitable[tuple[Simulator, Settings]]]


def sandbox_settings(tmp_path: Path, port: int, **extra: str) -> Settings:
    """Clients pointed at a simulator on ``port``, signing with this test's sandbox key."""
    key = tmp_path / "key.pem"
    sandbox_key(key)
    env = {
        "APPFIRST_PROVIDERS": "simulator",
        "APPFIRST_SIMULATOR_URL": f"http://127.0.0.1:{port}",
        "APPFIRST_NHS_APP_PRIVATE_KEY_PATH": str(key),
    }
    return settings_from_env({**env, **extra})


def simulator(settings: Settings, **scenario: object) -> Simulator:
    """A silent sandbox that trusts the keys of ``settings``."""
    return Simulator(
        Scenario(send_callbacks=False, **scenario),  # type: ignore[arg-type]
        "http://127.0.0.1:1",
        Credentials.from_settings(settings),
    )


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    """Start a simulator with a scenario; the settings point our clients at it."""
    runners = []

    async def _start(
        client_env: dict[str, str] | None = None, **scenario: object
    ) -> tuple[Simulator, Settings]:
        port = free_port()
        sim = simulator(sandbox_settings(tmp_path, port), **scenario)
        runners.append(await serve(sim, "127.0.0.1", port))
        return sim, sandbox_settings(tmp_path, port, **(client_env or {}))

    yield _start
    for runner in runners:
        await runner.cleanup()


def nhs(i: int) -> str:
    n = 400_000_000 + i * 7
    while check_digit(f"{n:09d}") is None:
        n += 1
    return f"{n:09d}{check_digit(f'{n:09d}')}"


def app_message(i: int) -> Outbound:
    return Outbound(
        channel="nhs_app",
        reference=f"m-{i}",
        message_id=f"m-{i}",
        ods_code="A81001",
        body="Please book your review",
        message_type="self_book",
        nhs_number=nhs(i),
    )


def sms_message(i: int) -> Outbound:
    return Outbound(
        channel="sms",
        reference=f"s-{i}",
        message_id=f"s-{i}",
        ods_code="A81001",
        body="Your results are back",
        mobile="+447700900123",
    )


async def test_an_nhs_app_send_is_authenticated_once_and_answered_with_its_id(start: Start) -> None:
    sim, settings = await start()
    gateway = factory.gateway(settings)
    try:
        ids = [await gateway.send(app_message(i)) for i in range(5)]
    finally:
        await gateway.aclose()
    assert all(ids) and len(set(ids)) == 5
    assert ids[0] == sim.sends["m-0"].id  # the communication id, read back from the answer
    assert sim.counts["tokens"] == 1  # one access token, reused
    assert sim.counts["unauthorised"] == 0


async def test_a_revoked_token_gets_401_and_is_renewed(start: Start) -> None:
    sim, settings = await start()
    gateway = factory.gateway(settings)
    try:
        await gateway.send(app_message(0))
        sim._tokens.clear()  # the platform revoked or expired it early
        await gateway.send(app_message(1))
    finally:
        await gateway.aclose()
    assert len(sim.sends) == 2
    assert sim.counts["unauthorised"] == 1
    assert sim.counts["tokens"] == 2


async def test_a_key_the_nhs_app_does_not_trust_is_refused(start: Start, tmp_path: Path) -> None:
    other = tmp_path / "other.pem"
    other.write_bytes(generate_private_key_pem())
    sim, settings = await start({"APPFIRST_NHS_APP_PRIVATE_KEY_PATH": str(other)})
    auth = factory.nhs_app_auth(settings, loopback.client())
    with pytest.raises(ProviderUnavailable, match="refused the client assertion"):
        await auth.headers()
    assert sim.counts["token_refused"] == 1 and not sim.sends


async def test_a_wrong_notify_key_is_refused(start: Start) -> None:
    sim, settings = await start()
    bad = (
        "appfirst-"
        + "1" * 8
        + "-1111-4111-8111-"
        + "1" * 12
        + "-"
        + "2" * 8
        + "-2222-4222-8222-"
        + "2" * 12
    )
    async with loopback.client() as http:
        client = NotifyClient(
            http,
            settings.provider_urls()[2],
            SecretStr(bad),
            sms_template_id="t",
            email_template_id="t",
        )
        with pytest.raises(Unauthorised):
            await client.send(sms_message(1))
    assert sim.counts["unauthorised"] == 1 and not sim.sends


@pytest.mark.slow(50)
async def test_the_rate_limit_holds_under_a_burst_of_10000(start: Start) -> None:
    """5,000 NHS App messages and 5,000 SMS offered at once; the sandbox enforces the same
    limits and would answer 429 to any excess. Rates are raised from the real 20/s and
    3,000/min so that the burst takes seconds, not minutes; the mechanism is the same."""
    rate = 250.0
    sim, settings = await start(
        {
            "APPFIRST_NHS_APP_RATE_PER_SECOND": str(rate),
            "APPFIRST_NOTIFY_RATE_PER_MINUTE": str(rate * 60),
        },
        nhs_app_rate_per_second=rate,
        notify_rate_per_minute=rate * 60,
    )
    gateway = factory.gateway(settings)
    queue: asyncio.Queue[Outbound] = asyncio.Queue()
    for i in range(5000):
        queue.put_nowait(app_message(i))
        queue.put_nowait(sms_message(i))

    async def worker() -> None:
        while not queue.empty():
            await gateway.send(queue.get_nowait())

    started = time.monotonic()
    try:
        await asyncio.gather(*(worker() for _ in range(200)))
    finally:
        await gateway.aclose()
    elapsed = time.monotonic() - started
    assert len(sim.sends) == 10_000
    assert all(s.calls == 1 for s in sim.sends.values())
    # Our limiter releases no more than the limit in any window (tests/unit/providers/
    # test_ratelimit.py), and paces a window's worth over the window and 25 ms more for the
    # time a request takes to reach the provider's clock. Here that time includes a turn of
    # one event loop shared with the provider at 500 requests a second, which now and then
    # takes longer: up to 13 requests of the 10,000 met a 429 in 24 runs, each sent again
    # after its Retry-After (every reference once, above). More than that is pacing gone wrong.
    assert sim.counts["throttled"] <= 50, "our limiter let through more than the provider takes"
    for channel in ("nhs_app", "sms"):
        per_second = Counter(int(s.received_at) for s in sim.sends.values() if s.channel == channel)
        # Aligned one-second buckets can hold up to a burst plus a second's rate.
        assert max(per_second.values()) <= 2 * rate
    assert elapsed >= 5000 / rate - 1.5  # paced, not a flood: at least ~19 s


async def test_attempts_released_together_still_leave_paced(start: Start) -> None:
    """The dispatcher's ``on_attempt`` waits for a durable flush, which returns to every
    attempt waiting on it at once: here a flush every 0.4 s, so about 20 attempts at a
    time. They must still reach the NHS App paced, not as a burst its one-second window
    answers 429."""
    rate = 50.0
    sim, settings = await start(
        {"APPFIRST_NHS_APP_RATE_PER_SECOND": str(rate)}, nhs_app_rate_per_second=rate
    )
    gateway = factory.gateway(settings)
    flushed = asyncio.Event()

    async def flushes() -> None:
        while True:
            await asyncio.sleep(0.4)
            flushed.set()
            flushed.clear()

    async def on_attempt() -> None:
        await flushed.wait()

    flusher = asyncio.ensure_future(flushes())
    try:
        await asyncio.gather(
            *(gateway.send(app_message(i), on_attempt=on_attempt) for i in range(150))
        )
    finally:
        flusher.cancel()
        await gateway.aclose()
    assert len(sim.sends) == 150 and all(s.calls == 1 for s in sim.sends.values())
    # Released together, 18 met a 429 (measured before the gate). Paced, a window holds at
    # most the paced rate and two (a bucket's bound after a stall of the event loop, which a
    # busy machine makes): one over, now and then. 0 in 8 runs, 5 of them beside 3 CPU hogs.
    assert sim.counts["throttled"] <= 3


async def test_429_with_retry_after_is_honoured_and_nothing_is_lost(start: Start) -> None:
    """Our limit set above the provider's (a misconfiguration): the provider's 429s slow
    us down, every message still goes exactly once."""
    sim, settings = await start(
        {"APPFIRST_NHS_APP_RATE_PER_SECOND": "1000"}, nhs_app_rate_per_second=40
    )
    gateway = factory.gateway(settings)
    try:
        await asyncio.gather(*(gateway.send(app_message(i)) for i in range(200)))
    finally:
        await gateway.aclose()
    assert sim.counts["throttled"] > 0
    assert len(sim.sends) == 200 and all(s.calls == 1 for s in sim.sends.values())


async def test_an_outage_holds_messages_and_sends_each_once_after(start: Start) -> None:
    sim, settings = await start()
    sim.outage_until = time.time() + 3.0
    gateway = factory.gateway(settings)
    try:
        await asyncio.gather(
            *(gateway.send(app_message(i)) for i in range(20)),
            *(gateway.send(sms_message(i)) for i in range(20)),
        )
    finally:
        await gateway.aclose()
    assert sim.counts["outage_refused"] > 0
    assert len(sim.sends) == 40 and all(s.calls == 1 for s in sim.sends.values())
    # The circuit kept the hammering down: a handful of probes per client, not thousands.
    assert sim.counts["outage_refused"] < 200


async def test_a_stopping_worker_starts_no_new_attempt(start: Start) -> None:
    # A send retrying through an outage: at a stop it gives up before its next attempt
    # (nothing in flight, so the next owner can send it), and nothing reaches the provider.
    sim, settings = await start()
    sim.outage_until = time.time() + 60
    gateway = factory.gateway(settings)
    try:
        sending = asyncio.ensure_future(gateway.send(sms_message(1)))
        for _ in range(500):  # until the first attempt has been refused
            if sim.counts["outage_refused"]:
                break
            await asyncio.sleep(0.02)
        gateway.stop_new_attempts()
        with pytest.raises(SendAbandoned):
            await asyncio.wait_for(sending, 10)  # at most one backoff or circuit wait
        with pytest.raises(SendAbandoned):
            await gateway.send(sms_message(2))
    finally:
        await gateway.aclose()
    assert not sim.sends


async def test_the_patients_report_is_read_across_pages(start: Start) -> None:
    sim, settings = await start(roster_size=600, report_page_size=100)
    reports = factory.reports(settings)
    try:
        users = {n: on async for n, on in reports.patients("A81001")}
    finally:
        await reports.aclose()
    expected = {
        n: sim.scenario.app_user(n)
        for n in sim.scenario.roster("A81001")
        if sim.scenario.app_user(n) is not None
    }
    assert users == expected
    assert len(users) > 100  # more than one page
    assert sim.counts["patient_reports"] == -(-len(users) // 100)


async def test_the_lookup_answers_from_the_practice_report_and_caches_it(start: Start) -> None:
    sim, settings = await start()
    lookup = factory.eligibility_lookup(settings)
    roster = sim.scenario.roster("A81001")
    try:
        answers = [await lookup.lookup(n, "A81001") for n in roster[:50]]
    finally:
        await lookup.aclose()
    assert all(a is not None for a in answers)
    for n, a in zip(roster[:50], answers, strict=True):
        assert a is not None and a.has_nhs_app == (sim.scenario.app_user(n) is not None)
    users = sum(1 for n in roster if sim.scenario.app_user(n) is not None)
    pages = -(-users // sim.scenario.report_page_size)
    assert sim.counts["patient_reports"] == pages  # one report fetched, for 50 lookups


async def test_a_slow_report_gives_unknown_within_the_timeout(start: Start) -> None:
    sim, settings = await start({"APPFIRST_ELIGIBILITY_TIMEOUT_SECONDS": "0.2"})
    sim.outage_until = time.time() + 60  # every call fails
    lookup = factory.eligibility_lookup(settings)
    try:
        began = time.monotonic()
        assert await lookup.lookup(nhs(1), "A81001") is None
        assert time.monotonic() - began < 1.0
    finally:
        await lookup.aclose()


async def test_an_absent_api_opens_the_lookup_circuit(tmp_path: Path) -> None:
    lookup = factory.eligibility_lookup(sandbox_settings(tmp_path, free_port()))
    assert isinstance(lookup, PracticeReportLookup)
    try:
        for i in range(lookup.breaker.threshold + 2):
            assert await lookup.lookup(nhs(1), f"A8100{i}") is None
            await asyncio.sleep(0.05)
        assert lookup.breaker.opened_at is not None
    finally:
        await lookup.aclose()


async def test_the_receipts_report_lists_the_days_tasks(start: Start) -> None:
    sim, settings = await start()
    sim.scenario = sim.scenario.model_copy(
        update={
            "send_callbacks": True,
            "delivery_seconds": 0.01,
            "read_median_seconds": 0.01,
            "callback_loss_share": 1.0,
            "report_page_size": 7,
        }
    )
    gateway = factory.gateway(settings)
    try:
        for i in range(10):
            await gateway.send(app_message(i))
    finally:
        await gateway.aclose()
    await asyncio.sleep(1.0)
    reports = factory.reports(settings)
    try:
        tasks = [t async for t in reports.receipts(datetime.now(UTC).date())]
    finally:
        await reports.aclose()
    assert len(tasks) == len(sim.tasks) >= 20  # at least Delivered and one more each
    assert {t["id"] for t in tasks} == {t["id"] for t in sim.tasks}


async def test_an_sms_whose_answer_was_lost_is_found_not_resent(start: Start) -> None:
    """Notify accepted the SMS but its answer came after our timeout: the retry asks Notify
    by reference, finds it, and sends nothing more."""
    sim, settings = await start({"APPFIRST_PROVIDER_TIMEOUT_SECONDS": "0.3"})
    sim.stalls, sim.stall_seconds = 1, 1.0
    gateway = factory.gateway(settings)
    try:
        provider_id = await gateway.send(sms_message(1))
    finally:
        await gateway.aclose()
    assert sim.sends["s-1"].calls == 1
    assert provider_id == sim.sends["s-1"].id


async def test_an_nhs_app_send_whose_answer_was_lost_is_not_resent(start: Start) -> None:
    sim, settings = await start({"APPFIRST_PROVIDER_TIMEOUT_SECONDS": "0.3"})
    sim.stalls, sim.stall_seconds = 1, 1.0
    gateway = factory.gateway(settings)
    try:
        with pytest.raises(SentUnconfirmed):
            await gateway.send(app_message(1))
        await asyncio.sleep(1.0)
    finally:
        await gateway.aclose()
    assert sim.sends["m-1"].calls == 1


async def test_a_connection_refused_is_resent_safely(tmp_path: Path) -> None:
    """Nothing reached the provider: retrying is safe, and happens until it is up."""
    port = free_port()
    settings = sandbox_settings(tmp_path, port)
    gateway = factory.gateway(settings)
    sending = asyncio.create_task(gateway.send(sms_message(2)))
    await asyncio.sleep(1.0)  # refused for a second
    sim = simulator(settings)
    runner = await serve(sim, "127.0.0.1", port)
    try:
        await asyncio.wait_for(sending, 30)
    finally:
        await gateway.aclose()
        await runner.cleanup()
    assert sim.sends["s-2"].calls == 1


def test_live_providers_refuse_sandbox_secrets() -> None:
    with pytest.raises(ValueError, match="APPFIRST_CALLBACK_TOKEN"):
        settings_from_env({"APPFIRST_PROVIDERS": "live"})
