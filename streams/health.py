"""``/healthz`` (the process is alive) and ``/readyz`` (group joined, tables recovered,
broker reachable)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from faust import web

from appfirst.probe import CachedCheck

if TYPE_CHECKING:
    from appfirst.streams.context import Context

BROKER_CHECK_TIMEOUT_SECONDS = 2.0


class Health:
    """The worker's ``/healthz`` and ``/readyz`` pages."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.settings = context.settings
        self.app = context.app
        settings = self.settings
        self.broker_reachable = CachedCheck(
            "broker",
            self._broker_answers,
            ttl=settings.broker_check_seconds,
            timeout=min(BROKER_CHECK_TIMEOUT_SECONDS, settings.broker_check_seconds),
        )
        part = self

        class Health(web.View):
            async def get(self, request: web.Request) -> web.Response:
                return self.json({"status": "alive"})

        class Ready(web.View):
            async def get(self, request: web.Request) -> web.Response:
                ok, why = await part.ready()
                return self.json({"status": why}, status=200 if ok else 503)

        context.app.page("/healthz")(Health)
        context.app.page("/readyz")(Ready)

    async def _broker_answers(self) -> bool:
        # A connection of its own, never the worker's clients: a metadata request on the
        # producer, cut off by the time limit, left sends unfinished (deadlines were lost in
        # the crash tests).
        for server in self.settings.bootstrap.split(","):
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

    def _broadcast_tables_loaded(self) -> bool:
        # The broadcast tables this process's parts declared before ready (the router's
        # practices, the failed numbers): a dispatcher-only process builds none of those
        # parts, so it has none to wait for.
        return all(table.ready.is_set() for table in self.context.loading)

    async def ready(self) -> tuple[bool, str]:
        app = self.app
        if app.rebalancing:
            return False, "rebalancing"
        recovery: Any = getattr(app.tables, "recovery", None)
        if (
            getattr(app, "in_recovery", False)
            or recovery is None
            or not recovery.completed.is_set()
        ):
            return False, "recovering tables"
        if not self._broadcast_tables_loaded():
            return False, "loading broadcast tables"
        if not app.consumer.assignment():
            return False, "no partitions assigned"
        if not await self.broker_reachable():
            return False, "broker unreachable"
        return True, "ready"
