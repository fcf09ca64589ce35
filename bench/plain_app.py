"""The Faust app of the bench's comparison workers (``bare``, ``plain_router``): Faust's
defaults plus what the worker's settings say about the broker, partitions, session and
commits, and nothing of appfirst's own (no rewinding consumer, no crash-only agents)."""

from __future__ import annotations

import asyncio

import faust

from appfirst.settings import Settings


def plain_app(settings: Settings, group: str) -> faust.App:
    return faust.App(
        f"{settings.topic_prefix}{group}",
        broker=settings.broker,
        autodiscover=False,
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.partitions,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=max(0.5, settings.session_timeout_seconds / 5),
        broker_commit_interval=settings.commit_interval_seconds,
        web_port=settings.web_port,
        web_bind="127.0.0.1",
        web_in_thread=False,
        store="memory://",
        datadir=settings.data_dir,
        table_standby_replicas=0,
    )


def run(app: faust.App) -> None:
    """A Faust worker on uvloop, as the appfirst worker runs."""
    import uvloop

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    faust.Worker(app, loglevel="warning", loop=loop).execute_from_commandline()
