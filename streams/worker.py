"""Loads every agent onto the app and runs a Faust worker."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from appfirst.streams import (
    contactability,
    dispatcher,
    health,
    ingress,
    metrics,
    router,
    tracker,
)
from appfirst.streams.app import app, settings

AGENT_MODULES = (router, contactability, tracker, metrics, dispatcher, ingress, health)


def run() -> None:
    import faust

    from appfirst.admin import ensure_topics
    from appfirst.providers import factory

    factory.check(settings)  # bad provider credentials stop the worker here, not per send
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    asyncio.run(ensure_topics(settings))
    loop = None
    try:
        import uvloop

        loop = uvloop.new_event_loop()
        asyncio.set_event_loop(loop)
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        pass
    worker = faust.Worker(app, loglevel=settings.log_level, loop=loop)
    logging.getLogger("appfirst").setLevel(settings.log_level.upper())
    worker.execute_from_commandline()
