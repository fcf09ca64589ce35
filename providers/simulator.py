"""A loopback sandbox of the providers: the NHS App messaging API and a GOV.UK
Notify-shaped SMS/email API, with patients who read, ignore, fail and respond.

Every send is recorded (``GET /_sim/sends``) and idempotent by reference: the same
reference twice gets the first answer back and is never delivered twice. Receipts and
responses are posted to the worker's callback endpoints after realistic delays.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from aiohttp import web

from appfirst.providers.callbacks import split_reference
from appfirst.providers.eligibility import PATIENTS_REPORT
from appfirst.providers.nhsapp import PATH as NHS_APP_PATH
from appfirst.providers.scenario import RESPONDING_TYPES, Scenario

log = logging.getLogger("appfirst.simulator")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Send:
    id: str
    channel: str
    reference: str
    message_type: str
    received_at: float = field(default_factory=time.time)
    calls: int = 1


@dataclass
class Simulator:
    scenario: Scenario
    callback_url: str
    callback_token: str
    sends: dict[str, Send] = field(default_factory=dict)
    duplicates: int = 0
    lookups: int = 0
    responded: set[str] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _client: httpx.AsyncClient | None = None

    # --- HTTP handlers -------------------------------------------------------------------
    async def nhs_app(self, request: web.Request) -> web.Response:
        body = await request.json()
        try:
            reference = next(
                i["value"] for i in body["identifier"] if i.get("system") == "urn:ietf:rfc:3986"
            )
            nhs_number = body["recipient"][0]["identifier"]["value"]
            text = body["payload"][0]["contentString"]
        except (KeyError, IndexError, TypeError, StopIteration):
            return _outcome(400, "invalid", "CommunicationRequest is missing required fields")
        if not nhs_number or not text:
            return _outcome(400, "invalid", "recipient and payload are required")
        message_type = (body.get("category") or [{}])[0].get("text", "sms")
        return self._accept("nhs_app", reference, message_type, fhir=True)

    async def notify(self, request: web.Request) -> web.Response:
        channel = request.match_info["channel"]
        body = await request.json()
        recipient = body.get("phone_number" if channel == "sms" else "email_address")
        reference = body.get("reference")
        if not recipient or not reference:
            return web.json_response(
                {
                    "status_code": 400,
                    "errors": [
                        {"error": "BadRequestError", "message": "recipient and reference required"}
                    ],
                },
                status=400,
            )
        message_type = (body.get("personalisation") or {}).get("message_type", "sms")
        return self._accept(channel, reference, message_type, fhir=False)

    async def patients(self, request: web.Request) -> web.Response:
        """The patients report, optionally filtered to one NHS number."""
        ods = request.query.get("ods-organisation-code")
        if not ods:
            return _outcome(400, "invalid", "ods-organisation-code is required")
        self.lookups += 1
        nhs = request.query.get("nhs-number")
        found = []
        if nhs:
            rng = self.scenario.rng(f"patient:{nhs}")
            if rng.random() < self.scenario.app_share:
                notifications = rng.random() < self.scenario.notifications_share
                found.append({"nhsNumber": nhs, "notificationsEnabled": notifications})
        return web.json_response({"patients": found})

    async def list_sends(self, request: web.Request) -> web.Response:
        by_channel = Counter(s.channel for s in self.sends.values())
        fallbacks = sum(1 for ref in self.sends if split_reference(ref)[1] == "fallback")
        payload: dict[str, Any] = {
            "total": len(self.sends),
            "by_channel": dict(by_channel),
            "fallbacks": fallbacks,
            "duplicates": self.duplicates,
            "lookups": self.lookups,
        }
        if request.query.get("references") == "1":
            payload["references"] = {
                ref: {"channel": s.channel, "received_at": s.received_at, "calls": s.calls}
                for ref, s in self.sends.items()
            }
        return web.json_response(payload)

    # --- behaviour -----------------------------------------------------------------------
    def _accept(
        self, channel: str, reference: str, message_type: str, *, fhir: bool
    ) -> web.Response:
        known = self.sends.get(reference)
        if known is not None:
            self.duplicates += 1
            known.calls += 1
            return web.json_response(self._answer(known, fhir), status=200)
        send = Send(str(uuid.uuid4()), channel, reference, message_type)
        self.sends[reference] = send
        if not self.scenario.send_callbacks:
            return web.json_response(self._answer(send, fhir), status=201)
        task = asyncio.get_running_loop().create_task(self._live(send))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return web.json_response(self._answer(send, fhir), status=201)

    @staticmethod
    def _answer(send: Send, fhir: bool) -> dict[str, Any]:
        if fhir:
            return {"resourceType": "CommunicationRequest", "id": send.id, "status": "active"}
        return {"id": send.id, "reference": send.reference}

    async def _live(self, send: Send) -> None:
        if send.channel == "nhs_app":
            await self._live_nhs_app(send)
        else:
            await self._live_notify(send)

    async def _live_nhs_app(self, send: Send) -> None:
        sc = self.scenario
        rng = sc.rng(send.reference)
        await asyncio.sleep(sc.delay(rng, sc.delivery_seconds))
        roll = rng.random()
        if roll < sc.failed_share:
            await self._task(send, "Failed")
            return
        await self._task(send, "Delivered")
        if roll < sc.failed_share + sc.unnotified_share:
            await self._task(send, "Unnotified")
            return
        await self._task(send, "Notified")
        if rng.random() >= sc.read_share:
            return
        await asyncio.sleep(sc.delay(rng, sc.read_median_seconds))
        await self._task(send, "Read")
        await self._maybe_respond(send, rng, sc.respond_share_app)

    async def _live_notify(self, send: Send) -> None:
        sc = self.scenario
        rng = sc.rng(send.reference)
        await asyncio.sleep(sc.delay(rng, sc.delivery_seconds))
        failed = rng.random() < sc.sms_failed_share
        await self._post(
            "/callbacks/notify",
            {
                "id": send.id,
                "reference": send.reference,
                "to": "redacted",
                "status": "permanent-failure" if failed else "delivered",
                "created_at": _now(),
                "completed_at": _now(),
                "sent_at": _now(),
                "notification_type": send.channel,
            },
        )
        if not failed and send.channel == "sms":
            await self._maybe_respond(send, rng, sc.respond_share_sms)

    async def _maybe_respond(self, send: Send, rng: Any, share: float) -> None:
        if send.message_type not in RESPONDING_TYPES or rng.random() >= share:
            return
        await asyncio.sleep(self.scenario.delay(rng, self.scenario.respond_median_seconds))
        message_id, _ = split_reference(send.reference)
        if message_id in self.responded:
            return  # one response per message, whichever leg it came through
        self.responded.add(message_id)
        await self._post(
            "/callbacks/responses",
            {"message_id": message_id, "responded_at": _now(), "attachments": 0},
        )

    async def _task(self, send: Send, status: str) -> None:
        await self._post(
            "/callbacks/nhs-app",
            {
                "resourceType": "Task",
                "id": send.id,
                "status": "completed",
                "intent": "order",
                "identifier": [{"system": "urn:ietf:rfc:3986", "value": send.reference}],
                "businessStatus": {"coding": [{"code": status}]},
                "lastModified": _now(),
            },
        )

    async def _post(self, path: str, body: dict[str, Any]) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(5.0))
        headers = {"Authorization": f"Bearer {self.callback_token}"}
        for attempt in range(8):
            try:
                resp = await self._client.post(self.callback_url + path, json=body, headers=headers)
                if resp.status_code < 500:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2 * 2**attempt)
        log.warning("callback %s could not be delivered", path)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._client is not None:
            await self._client.aclose()


def _outcome(status: int, code: str, text: str) -> web.Response:
    return web.json_response(
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "diagnostics": text}],
        },
        status=status,
    )


def build_app(sim: Simulator) -> web.Application:
    app = web.Application()
    app.router.add_post(NHS_APP_PATH, sim.nhs_app)
    app.router.add_post("/v2/notifications/{channel:sms|email}", sim.notify)
    app.router.add_get(PATIENTS_REPORT, sim.patients)
    app.router.add_get("/_sim/sends", sim.list_sends)

    async def _close(_: web.Application) -> None:
        await sim.close()

    app.on_cleanup.append(_close)
    return app


async def serve(sim: Simulator, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(build_app(sim), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
