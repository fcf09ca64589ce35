"""Loads the agents of this process's role (APPFIRST_ROLE) and runs a Faust worker."""

from __future__ import annotations

import asyncio
import importlib
from pathlib import Path
from types import ModuleType

import faust

from appfirst import logs
from appfirst.streams import taskdump
from appfirst.streams.app import app, settings

# What each role runs. Importing a module adds its agents, tables, timers and pages to the
# app, so a role imports only its own.
OPERATIONS = ("health", "exporter")
STREAMS = (
    "router",
    "contactability",
    "tracker",
    "metrics",
    "status",
    "batches",
    "batch_api",
    "ingress",
)
ROLES = {
    "all": (*STREAMS, "dispatcher", *OPERATIONS),
    "streams": (*STREAMS, *OPERATIONS),
    "dispatcher": ("dispatcher", *OPERATIONS),
}


def load(modules: tuple[str, ...]) -> list[ModuleType]:
    return [importlib.import_module(f"appfirst.streams.{name}") for name in modules]


class Worker(faust.Worker):
    def _on_sigusr1(self) -> None:
        # Faust's own dump (mode's) prints every frame's local variables to stderr: message
        # bodies and phone numbers among them. Ours names functions and lines only, and
        # answers from the start, during recovery too.
        taskdump.dump_tasks()


def run(modules: tuple[str, ...] | None = None) -> None:
    """Run a worker with the agents of ``modules`` (default: those of its role)."""
    from appfirst.admin import ensure_topics
    from appfirst.providers import factory

    load(ROLES[settings.role] if modules is None else modules)
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
    # Faust re-configures logging as it starts: hand it ours (JSON lines, redaction). Quiet
    # and without its spinner, it prints nothing that is not a log record.
    worker = Worker(
        app,
        loglevel=settings.log_level,
        logging_config=logs.config(settings.log_level),
        quiet=True,
        loop=loop,
    )
    worker.spinner = None
    worker.execute_from_commandline()
