"""The ceiling: a Faust agent that only decodes the pipeline's input events, with the same
app settings (uvloop, raw bytes, our decoders), and nothing else.

Run as ``python -m bench.bare``; it reads the broker and prefix from the same settings as
the worker and commits as group ``<prefix>bare``.
"""

from __future__ import annotations

from typing import Any

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

from .plain_app import plain_app, run

MODELS: dict[str, type[Event]] = {
    "send-requests": SendRequest,
    "practice-settings": PracticeSettings,
    "eligibility": Eligibility,
    "delivery-receipts": DeliveryReceipt,
    "read-receipts": ReadReceipt,
    "responses": Response,
}

settings = get_settings()
app = plain_app(settings, "bare")
source = app.topic(*(settings.topic(t) for t in MODELS), key_type=bytes, value_type=bytes)
decoders = {settings.topic(t): Decoder(m) for t, m in MODELS.items()}


@app.agent(source)
async def decode(stream: Any) -> None:
    async for event in stream.events():
        decoders[event.message.topic].decode(event.message.value)


if __name__ == "__main__":
    run(app)
