"""The floor: Faust carrying the pipeline's records over the pipeline's hops, with no
work of appfirst's own. Each send request is forwarded to ``router-by-patient`` and from
there to ``dispatches``; each dispatch is read by two agents (as the per-message agent and
the dispatcher read it) and one writes a status record; receipts and responses are read by
the per-message agent's stand-in. Values are forwarded as they are: no decoding, no
tables, no flushes. Every agent takes its events in batches, as appfirst's do: read one
at a time the floor is some 10% lower (measured 2026-12-07), and the floor should be the
best plain Faust does.

Run as ``python -m bench.hops``; it commits as group ``<prefix>hops``.
"""

from __future__ import annotations

from typing import Any

from appfirst.settings import get_settings
from appfirst.topics.catalogue import ROUTER_BY_PATIENT

from .plain_app import plain_app, run

settings = get_settings()
app = plain_app(settings, "hops")
# appfirst's routing batch and wait (APPFIRST_ROUTE_BATCH, APPFIRST_ROUTE_WITHIN).
BATCH, WITHIN = settings.route_batch, settings.route_within


def _topic(*names: str) -> Any:
    return app.topic(*(settings.topic(n) for n in names), key_type=bytes, value_type=bytes)


requests = _topic("send-requests")
by_patient = _topic(ROUTER_BY_PATIENT)
dispatches = _topic("dispatches")
status = _topic("message-status")
receipts = _topic("delivery-receipts", "read-receipts", "responses")
setup = _topic("practice-settings", "eligibility")


@app.agent(requests)
async def intake(stream: Any) -> None:
    async for batch in stream.take_events(BATCH, within=WITHIN):
        for event in batch:
            await by_patient.send(key=event.message.key, value=event.message.value)


@app.agent(by_patient)
async def route(stream: Any) -> None:
    async for batch in stream.take_events(BATCH, within=WITHIN):
        for event in batch:
            await dispatches.send(key=event.message.key, value=event.message.value)


@app.agent(dispatches)
async def follow(stream: Any) -> None:
    async for batch in stream.take_events(BATCH, within=WITHIN):
        for event in batch:
            await status.send(key=event.message.key, value=event.message.value)


@app.agent(dispatches)
async def dispatch(stream: Any) -> None:
    async for _ in stream.take_events(BATCH, within=WITHIN):
        pass


@app.agent(receipts)
async def follow_receipts(stream: Any) -> None:
    async for _ in stream.take_events(BATCH, within=WITHIN):
        pass


@app.agent(setup)
async def keep(stream: Any) -> None:
    async for _ in stream.take_events(BATCH, within=WITHIN):
        pass


if __name__ == "__main__":
    run(app)
