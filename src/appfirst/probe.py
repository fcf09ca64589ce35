"""A health check's answer, reused for a while: probes (a kubelet, a load balancer, a
person with curl) can come as often as they like and the checked service sees one
time-bounded check per interval."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("appfirst.probe")


class CachedCheck:
    def __init__(
        self,
        name: str,
        check: Callable[[], Awaitable[bool]],
        *,
        ttl: float,
        timeout: float,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._check = check
        self._ttl = ttl
        self._timeout = timeout
        self._now = now
        self._answer: bool | None = None
        self._answered_at = 0.0
        self._running: asyncio.Task[bool] | None = None

    async def __call__(self) -> bool:
        if self._answer is not None and self._now() - self._answered_at < self._ttl:
            return self._answer
        if self._running is None:
            self._running = asyncio.ensure_future(self._run())
        # Shielded: a probe that hangs up must not cancel the check the others wait on.
        return await asyncio.shield(self._running)

    async def _run(self) -> bool:
        try:
            ok = bool(await asyncio.wait_for(self._check(), self._timeout))
            error = "" if ok else "answered no"
        except Exception as exc:  # a timeout or an unreachable service: the answer is no
            ok, error = False, type(exc).__name__
        if ok != self._answer:
            if ok:
                log.info("%s check passes", self.name, extra={"check": self.name})
            else:
                log.warning("%s check fails: %s", self.name, error, extra={"check": self.name})
        self._answer, self._answered_at, self._running = ok, self._now(), None
        return ok
