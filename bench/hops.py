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

from collections.abc import Awaitable, Callable
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


def forward_to(to: Any) -> Callable[[Any], Awaitable[None]]:
    """An agent that writes each event it takes, as it came, to ``to``."""

    async def forward(stream: Any) -> None:
        async for batch in stream.take_events(BATCH, within=WITHIN):
            for event in batch:
                await to.send(key=event.message.key, value=event.message.value)

    return forward


async def read(stream: Any) -> None:
    """An agent that takes events and does nothing with them."""
    async for _ in stream.take_events(BATCH, within=WITHIN):
        pass


# The pipeline's hops: each request re-keyed and routed, each dispatch read twice (the
# per-message agent writes its status, the dispatcher sends), the rest read once.
app.agent(requests, name="intake")(forward_to(by_patient))
app.agent(by_patient, name="route")(forward_to(dispatches))
app.agent(dispatches, name="follow")(forward_to(status))
app.agent(dispatches, name="dispatch")(read)
app.agent(receipts, name="follow_receipts")(read)
app.agent(setup, name="keep")(read)


if __name__ == "__main__":
    run(app)
