"""Callback ingress on the worker's web port: provider receipts and patient responses in,
contract events out.

Every callback must carry its provider's bearer token (compared in constant time), else 401.
A callback is answered 202 only once the broker has acknowledged its record (acks=all): a
receipt the provider will not resend must not live only in this process's buffers. If the
broker does not acknowledge within ``APPFIRST_CALLBACK_ACK_TIMEOUT_SECONDS`` or the send
fails, the answer is 503 with ``Retry-After``, so the provider sends it again. Duplicates
(such a retry of a record that did arrive late) and any order are harmless: the tracker
and metrics keep the first of each kind of receipt per message, and the ingress itself
keeps no state. The NHS App also requires
mutual TLS on its real-time receipts; that is terminated by the ingress proxy in front of
the worker (docs/operations.md, "Going live").
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from faust import web

from appfirst import telemetry
from appfirst.errors import DecodeError
from appfirst.providers.callbacks import parse_nhs_app, parse_notify, parse_response
from appfirst.topics.models import DeliveryReceipt, ReadReceipt, Response

if TYPE_CHECKING:
    from appfirst.streams.context import Context

Inbound = DeliveryReceipt | ReadReceipt | Response | None

log = logging.getLogger("appfirst.ingress")

# A hint only: providers retry callbacks on their own schedule. Short, since a broker that
# missed one acknowledgement is usually back within seconds (a leader election).
RETRY_AFTER_SECONDS = 5


class Ingress:
    """The callback pages: each callback authorised by its provider's bearer token, then
    sent on as a contract event, answered once the broker has acknowledged it."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.settings = context.settings
        self.io = context.io
        self.topics = context.topics
        self.tokens = {
            provider: f"Bearer {secret.get_secret_value()}".encode()
            for provider, secret in self.settings.callback_tokens().items()
        }
        part = self

        class NhsAppCallback(web.View):
            async def post(self, request: web.Request) -> web.Response:
                return await part._ingest(self, request, "nhs_app", parse_nhs_app)

        class NotifyCallback(web.View):
            async def post(self, request: web.Request) -> web.Response:
                return await part._ingest(self, request, "notify", parse_notify)

        class ResponseCallback(web.View):
            async def post(self, request: web.Request) -> web.Response:
                return await part._ingest(self, request, "responses", parse_response)

        context.app.page("/callbacks/nhs-app")(NhsAppCallback)
        context.app.page("/callbacks/notify")(NotifyCallback)
        context.app.page("/callbacks/responses")(ResponseCallback)

    def _authorised(self, request: web.Request, provider: str) -> bool:
        given = request.headers.get("Authorization", "").encode()
        return hmac.compare_digest(given, self.tokens[provider])

    async def _ingest(
        self,
        view: web.View,
        request: web.Request,
        provider: str,
        parse: Callable[[dict[str, Any]], Inbound],
    ) -> web.Response:
        if not self._authorised(request, provider):
            telemetry.callbacks.labels(provider, "unauthorised").inc()
            return view.json({"error": "unauthorised"}, status=401)
        try:
            body = await request.json()
            event = parse(body)
        except (ValueError, DecodeError) as exc:
            telemetry.callbacks.labels(provider, "invalid").inc()
            return view.json({"error": str(getattr(exc, "reason", "invalid JSON"))}, status=400)
        if event is None:
            telemetry.callbacks.labels(provider, "ignored").inc()
            return view.json({"status": "ignored"}, status=202)
        if isinstance(event, DeliveryReceipt):
            topic = self.topics.delivery_receipts
        elif isinstance(event, ReadReceipt):
            topic = self.topics.read_receipts
        else:
            topic = self.topics.responses
        try:
            async with asyncio.timeout(self.settings.callback_ack_timeout_seconds):
                await self.io.send_acknowledged(
                    topic, event.message_id.encode(), self.io.encode(event)
                )
        except Exception as exc:  # a timeout, or whatever the delivery failed with
            reason = (
                "broker did not acknowledge in time"
                if isinstance(exc, TimeoutError)
                else "broker refused the record"
            )
            telemetry.callbacks.labels(provider, "unacknowledged").inc()
            # The type only: an exception's text may quote the record.
            log.warning(
                "callback not acknowledged provider=%s reason=%s error=%s",
                provider,
                reason,
                type(exc).__name__,
                extra={"provider": provider, "reason": reason},
            )
            return view.json(
                {"error": "unavailable", "reason": reason},
                status=503,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        telemetry.callbacks.labels(provider, "ok").inc()
        return view.json({"status": "accepted"}, status=202)
