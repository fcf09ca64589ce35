"""The readiness check's cache: one bounded check per interval, however many probes."""

from __future__ import annotations

import asyncio

from appfirst.probe import CachedCheck


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


async def test_the_answer_is_reused_until_it_is_stale() -> None:
    calls: list[int] = []

    async def check() -> bool:
        calls.append(1)
        return True

    clock = Clock()
    cached = CachedCheck("broker", check, ttl=5, timeout=1, now=clock)
    assert await cached() and await cached()
    assert len(calls) == 1
    clock.t += 4.9
    assert await cached()
    assert len(calls) == 1
    clock.t += 0.2
    assert await cached()
    assert len(calls) == 2


async def test_concurrent_probes_share_one_check() -> None:
    calls: list[int] = []
    release = asyncio.Event()

    async def check() -> bool:
        calls.append(1)
        await release.wait()
        return True

    cached = CachedCheck("broker", check, ttl=5, timeout=1, now=Clock())
    probes = [asyncio.ensure_future(cached()) for _ in range(20)]
    await asyncio.sleep(0)
    release.set()
    assert all(await asyncio.gather(*probes))
    assert len(calls) == 1


async def test_a_slow_or_failing_check_answers_no_in_time() -> None:
    async def hangs() -> bool:
        await asyncio.sleep(60)
        return True

    async def fails() -> bool:
        raise ConnectionError("refused")

    loop = asyncio.get_running_loop()
    started = loop.time()
    assert not await CachedCheck("broker", hangs, ttl=5, timeout=0.1)()
    assert loop.time() - started < 1
    assert not await CachedCheck("broker", fails, ttl=5, timeout=0.1)()


async def test_a_probe_that_hangs_up_does_not_cancel_the_check() -> None:
    release = asyncio.Event()

    async def check() -> bool:
        await release.wait()
        return True

    cached = CachedCheck("broker", check, ttl=5, timeout=1, now=Clock())
    first = asyncio.ensure_future(cached())
    await asyncio.sleep(0)
    first.cancel()
    second = asyncio.ensure_future(cached())
    await asyncio.sleep(0)
    release.set()
    assert await second
