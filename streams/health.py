"""``/healthz`` (the process is alive) and ``/readyz`` (group joined, tables recovered,
broker reachable)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from faust import web

from appfirst.probe import CachedCheck
from appfirst.streams.app import app, settings

BROKER_CHECK_TIMEOUT_SECONDS = 2.0


async def _broker_answers() -> bool:
    # A connection of its own, never the worker's clients: a metadata request on the
    # producer, cut off by the time limit, left sends unfinished (deadlines were lost in
    # the crash tests).
    for server in settings.bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            _, writer = await asyncio.open_connection(host, int(port))
        except OSError:
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    return False


broker_reachable = CachedCheck(
    "broker",
    _broker_answers,
    ttl=settings.broker_check_seconds,
    timeout=min(BROKER_CHECK_TIMEOUT_SECONDS, settings.broker_check_seconds),
)


def _broadcast_tables_loaded() -> bool:
    # Imported here: a dispatcher-only process must not load the router's agents.
    from appfirst.streams.failed_numbers import failed_numbers_cache
    from appfirst.streams.router import practice_cache

    return practice_cache.ready.is_set() and failed_numbers_cache.ready.is_set()


async def ready() -> tuple[bool, str]:
    if app.rebalancing:
        return False, "rebalancing"
    recovery: Any = getattr(app.tables, "recovery", None)
    if getattr(app, "in_recovery", False) or recovery is None or not recovery.completed.is_set():
        return False, "recovering tables"
    if settings.role != "dispatcher" and not _broadcast_tables_loaded():
        return False, "loading broadcast tables"
    if not app.consumer.assignment():
        return False, "no partitions assigned"
    if not await broker_reachable():
        return False, "broker unreachable"
    return True, "ready"


@app.page("/healthz")
class Health(web.View):
    async def get(self, request: web.Request) -> web.Response:
        return self.json({"status": "alive"})


@app.page("/readyz")
class Ready(web.View):
    async def get(self, request: web.Request) -> web.Response:
        ok, why = await ready()
        return self.json({"status": why}, status=200 if ok else 503)
