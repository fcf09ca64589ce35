"""A token bucket per provider: the NHS App takes 20 requests a second, Notify 3,000 a
minute. ``reserve`` is pure (time in, wait out); ``acquire`` sleeps for it."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    rate: float  # tokens per second
    capacity: float  # the largest burst
    tokens: float = field(init=False)
    updated: float | None = field(default=None, init=False)
    _turn: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.capacity < 1:
            raise ValueError("rate must be positive and capacity at least one")
        self.tokens = self.capacity

    def reserve(self, now: float) -> float:
        """Take one token; return how long to wait before using it (0: at once).

        Reservations queue: each caller is given its own slot, so concurrent callers never
        exceed the rate together.
        """
        if self.updated is not None:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    async def acquire(self) -> None:
        """Wait for a token. Waiters take turns, each reserving once the one before it has
        gone: reserved all at once in advance, every turn falling within an event-loop stall
        would go together after it, a burst that a provider's sliding window answers with
        429s (after a 0.2 s stall at 100 a second, 7 went at once:
        ``test_a_stalled_event_loop_releases_no_burst_after_it``)."""
        async with self._turn:
            wait = self.reserve(time.monotonic())
            if wait > 0:
                await asyncio.sleep(wait)
