"""``create_app``: a worker's Faust app and its parts, made from a ``Settings``; and ``run``,
which runs one as a Faust worker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import faust

from appfirst import logs
from appfirst.clock import Clock
from appfirst.settings import Settings, get_settings
from appfirst.streams import taskdump
from appfirst.streams.app import App
from appfirst.streams.batch_api import BatchApi
from appfirst.streams.batches import Batches
from appfirst.streams.context import Context
from appfirst.streams.dispatcher import Dispatcher
from appfirst.streams.exporter import Exporter
from appfirst.streams.failed_numbers import FailedNumbers
from appfirst.streams.health import Health
from appfirst.streams.ingress import Ingress
from appfirst.streams.messages import Messages
from appfirst.streams.metrics import Metrics
from appfirst.streams.router import Router

# What each role runs: a part adds its agents, tables, timers and pages to the app as it is
# built, so a role builds only its own.
OPERATIONS = ("health", "exporter")
STREAMS = (
    "router",
    "messages",
    "metrics",
    "batches",
    "batch_api",
    "ingress",
)
ROLES = {
    "all": (*STREAMS, "dispatcher", *OPERATIONS),
    "streams": (*STREAMS, *OPERATIONS),
    "dispatcher": ("dispatcher", *OPERATIONS),
}


class Appfirst:
    """A worker's app and the parts built on it (``parts["router"]`` is a ``Router``)."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.app: App = context.app
        self.parts: dict[str, Any] = {}

    def part(self, name: str) -> Any:
        """The part called ``name``, built (with the parts it needs) on first asking."""
        if name not in self.parts:
            self.parts[name] = BUILDERS[name](self)
        return self.parts[name]


BUILDERS: dict[str, Callable[[Appfirst], Any]] = {
    "failed_numbers": lambda w: FailedNumbers(w.context),
    "router": lambda w: Router(w.context, w.part("failed_numbers")),
    # The fallback engine is a part of the per-message agent: its deadlines are a part of
    # each message's row (streams/messages.py).
    "tracker": lambda w: w.part("messages").tracker,
    "messages": lambda w: Messages(w.context, w.part("failed_numbers")),
    "metrics": lambda w: Metrics(w.context),
    "batches": lambda w: Batches(w.context),
    "batch_api": lambda w: BatchApi(w.context, w.part("router"), w.part("failed_numbers")),
    "ingress": lambda w: Ingress(w.context),
    "dispatcher": lambda w: Dispatcher(w.context),
    "health": lambda w: Health(w.context),
    "exporter": lambda w: Exporter(w.context),
}


def create_app(
    settings: Settings, parts: Iterable[str] | None = None, *, clock: Clock | None = None
) -> Appfirst:
    """The app of ``settings``'s role (or of ``parts`` alone), read from nothing else."""
    built = Appfirst(Context(settings, clock))
    for name in ROLES[settings.role] if parts is None else parts:
        built.part(name)
    return built


class Worker(faust.Worker):
    async def _sentinel_task(self) -> None:
        # mode lets the loop run a second more before closing it, after every service has
        # stopped and the producer has flushed: a second added to every stop (a deploy, a
        # test's teardown). One pass of the loop runs the callbacks those stops scheduled.
        await asyncio.sleep(0)

    def _on_sigusr1(self) -> None:
        # Faust's own dump (mode's) prints every frame's local variables to stderr: message
        # bodies and phone numbers among them. Ours names functions and lines only, and
        # answers from the start, during recovery too.
        taskdump.dump_tasks()


def run(parts: tuple[str, ...] | None = None) -> None:
    """Run a worker of the environment's settings with the parts of its role (or
    ``parts``)."""
    from appfirst.admin import ensure_topics
    from appfirst.providers import factory

    settings = get_settings()
    built = create_app(settings, parts)
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
        built.app,
        loglevel=settings.log_level,
        logging_config=logs.config(settings.log_level),
        quiet=True,
        loop=loop,
    )
    worker.spinner = None
    worker.execute_from_commandline()
