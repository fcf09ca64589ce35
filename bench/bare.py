"""The ceiling: a Faust agent that only decodes the pipeline's input events, with the same
app settings (uvloop, raw bytes, our decoders), and nothing else.

Run as ``python -m bench.bare``; it reads the broker and prefix from the same settings as
the worker and commits as group ``<prefix>bare``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust

from appfirst.codecs import Decoder
from appfirst.settings import get_settings
from appfirst.topics.models import (
    DeliveryReceipt,
    Eligibility,
    Event,
    PracticeSettings,
    ReadReceipt,
    Response,
    SendRequest,
)

MODELS: dict[str, type[Event]] = {
    "send-requests": SendRequest,
    "practice-settings": PracticeSettings,
    "eligibility": Eligibility,
    "delivery-receipts": DeliveryReceipt,
    "read-receipts": ReadReceipt,
    "responses": Response,
}

settings = get_settings()
app = faust.App(
    f"{settings.topic_prefix}bare",
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
)
source = app.topic(*(settings.topic(t) for t in MODELS), key_type=bytes, value_type=bytes)
decoders = {settings.topic(t): Decoder(m) for t, m in MODELS.items()}


@app.agent(source)
async def decode(stream: Any) -> None:
    async for event in stream.events():
        decoders[event.message.topic].decode(event.message.value)


if __name__ == "__main__":
    import uvloop

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    faust.Worker(app, loglevel="warning", loop=loop).execute_from_commandline()
