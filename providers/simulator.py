"""A loopback sandbox of the providers, speaking their published APIs:

- NHS App (under ``/nhs-app``): ``CommunicationRequest`` sends, the daily receipts and
  patients reports, paged; signed-JWT auth through ``/oauth2/token``; ``OperationOutcome``
  errors; 429 with ``Retry-After`` above 20 requests a second.
- GOV.UK Notify (at the root): ``/v2/notifications/sms|email`` with HS256 JWT auth, its
  error bodies, and 429 above 3,000 requests a minute.
- Patients who read, ignore, fail and respond (``Scenario``), whose receipts and responses
  are posted to the worker's callbacks with each provider's token, and kept for the report.

Neither provider de-duplicates: a send with a reference (Notify) or request id (NHS App)
already seen is a new notification, with its own id, delivered and counted again. GOV.UK
Notify does not de-duplicate by reference (many notifications may share one, and
``GET /v2/notifications?reference=`` lists them all). Nothing we hold on the NHS App
messaging API says it de-duplicates by request id (the pilot and product material we
were given is silent on it), so we take the strict reading: a repeat is a second
message in the patient's inbox. ``/_sim/*`` is the test harness: the record of every send and
of each repeat, and fault switches (an outage per provider, a latency per provider, a
refusing token endpoint, answers held back).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import httpx
from aiohttp import web

from appfirst.providers.auth import (
    CLIENT_ASSERTION_TYPE,
    AuthError,
    split_notify_key,
    verify_client_assertion,
    verify_notify_token,
)
from appfirst.providers.callbacks import split_reference
from appfirst.providers.nhsapp import (
    CAMPAIGN_SYSTEM,
    MAX_CONTENT,
    NHS_NUMBER_SYSTEM,
    REQUEST_ID_SYSTEM,
    identifier,
)
from appfirst.providers.nhsapp import (
    PATH as NHS_APP_PATH,
)
from appfirst.providers.notify import EMAIL_PATH, LIST_PATH, SMS_PATH
from appfirst.providers.patients import app_outcome, text_outcome
from appfirst.providers.reports import PATIENTS_REPORT, RECEIPTS_REPORT
from appfirst.providers.scenario import Scenario
from appfirst.rules.nhs_number import is_valid_nhs_number

log = logging.getLogger("appfirst.simulator")

NHS_APP_PREFIX = "/nhs-app"
TOKEN_PATH = "/oauth2/token"  # noqa: S105 (a path, not a secret)
COMMUNICATION_ID_SYSTEM = "https://fhir.nhs.uk/Id/nhs-app-communication-id"
STATUS_SYSTEM = "https://fhir.nhs.uk/CodeSystem/NHSApp-Communication-Status"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Credentials:
    """What the sandbox trusts, as a real service would after onboarding."""

    nhs_app_api_key: str = field(repr=False)
    nhs_app_key_id: str
    nhs_app_public_key: Any = field(repr=False)
    notify_service_id: str
    notify_secret: str = field(repr=False)
    callback_tokens: dict[str, str] = field(repr=False)

    @classmethod
    def from_settings(cls, settings: Any) -> Credentials:
        from appfirst.providers.auth import public_key_of
        from appfirst.providers.factory import nhs_app_private_key

        service_id, secret = split_notify_key(settings.notify_api_key.get_secret_value())
        return cls(
            nhs_app_api_key=settings.nhs_app_api_key.get_secret_value(),
            nhs_app_key_id=settings.nhs_app_key_id,
            nhs_app_public_key=public_key_of(nhs_app_private_key(settings)),
            notify_service_id=service_id,
            notify_secret=secret,
            callback_tokens={
                k: v.get_secret_value() for k, v in settings.callback_tokens().items()
            },
        )


@dataclass
class Send:
    id: str
    channel: str
    reference: str
    message_type: str
    received_at: float = field(default_factory=time.time)
    # On the first notification of a reference (``Simulator.sends``): how many notifications
    # were created under that reference, this one included. More than one means the patient
    # got the message more than once.
    calls: int = 1


PROVIDERS = ("nhs_app", "notify")


class Window:
    """Requests in the last ``length`` seconds, to enforce a provider's limit."""

    def __init__(self, limit: float, length: float) -> None:
        self.limit = limit
        self.length = length
        self.times: collections.deque[float] = collections.deque()

    def admit(self, now: float) -> float | None:
        """None if admitted, else the seconds until a request would be."""
        while self.times and self.times[0] <= now - self.length:
            self.times.popleft()
        if len(self.times) >= self.limit:
            return self.times[0] + self.length - now
        self.times.append(now)
        return None


@dataclass
class Simulator:
    scenario: Scenario
    callback_url: str
    credentials: Credentials
    sends: dict[str, Send] = field(default_factory=dict)  # the first notification per reference
    notifications: list[Send] = field(default_factory=list)  # every one, repeats included
    tasks: list[dict[str, Any]] = field(default_factory=list)  # every receipt, for the report
    counts: Counter[str] = field(default_factory=Counter)
    responded: set[str] = field(default_factory=set)
    outage_until: float = 0.0  # an outage of every provider
    outage_status: int = 503
    # An outage of one provider: provider -> (until, status). Checked with the one above.
    provider_outages: dict[str, tuple[float, int]] = field(default_factory=dict)
    latency: dict[str, float] = field(default_factory=dict)  # provider -> seconds per send
    token_refusal: int | None = None  # while set, /oauth2/token answers this status
    stalls: int = 0  # the next N sends are accepted but answered after stall_seconds
    stall_seconds: float = 0.0
    _tokens: dict[str, float] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _client: httpx.AsyncClient | None = None

    def __post_init__(self) -> None:
        # The NHS App counts per second (spike arrest); Notify per minute.
        self._nhs_app_window = Window(self.scenario.nhs_app_rate_per_second, 1.0)
        self._notify_window = Window(self.scenario.notify_rate_per_minute, 60.0)

    # --- NHS App: auth -------------------------------------------------------------------
    async def token(self, request: web.Request) -> web.Response:
        if self.token_refusal is not None:
            # As when the application's key or product access is revoked on the platform.
            self.counts["token_refused"] += 1
            return _oauth_error(
                "invalid_client", "client credentials refused", status=self.token_refusal
            )
        form = await request.post()
        if form.get("grant_type") != "client_credentials" or (
            form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE
        ):
            return _oauth_error("invalid_request", "grant_type or client_assertion_type")
        token_url = str(request.url.with_query(None))
        try:
            verify_client_assertion(
                str(form.get("client_assertion", "")),
                public_key=self.credentials.nhs_app_public_key,
                api_key=self.credentials.nhs_app_api_key,
                token_url=token_url,
                key_id=self.credentials.nhs_app_key_id,
            )
        except AuthError as exc:
            self.counts["token_refused"] += 1
            return _oauth_error("invalid_request", str(exc))
        access = secrets.token_urlsafe(24)
        lifetime = self.scenario.token_lifetime_seconds
        self._tokens[access] = time.time() + lifetime
        self.counts["tokens"] += 1
        return web.json_response(
            {
                "access_token": access,
                "expires_in": str(int(lifetime)),
                "token_type": "Bearer",
                "issued_at": str(int(time.time() * 1000)),
            }
        )

    def _nhs_app_gate(self, request: web.Request, *, limited: bool) -> web.Response | None:
        """Outage, auth and rate limit, in the order the API platform applies them."""
        down = self._outage("nhs_app")
        if down is not None:
            self.counts["outage_refused"] += 1
            return _outcome(down, "exception", "service unavailable")
        header = request.headers.get("Authorization", "")
        expiry = self._tokens.get(header.removeprefix("Bearer "), 0.0)
        if not header.startswith("Bearer ") or expiry < time.time():
            self.counts["unauthorised"] += 1
            return _outcome(401, "forbidden", "Invalid Access Token")
        if limited:
            wait = self._nhs_app_window.admit(time.monotonic())
            if wait is not None:
                self.counts["throttled"] += 1
                return _outcome(
                    429,
                    "throttled",
                    "Your application, appfirst, has exceeded its quota of "
                    f"{self.scenario.nhs_app_rate_per_second:g} requests every 1 second(s) "
                    "and is being rate limited.",
                    retry_after=wait,
                )
        return None

    # --- NHS App: messages and reports -----------------------------------------------------
    def _outage(self, provider: str) -> int | None:
        """The status an outage of ``provider`` answers with, or None if it is up."""
        now = time.time()
        if now < self.outage_until:
            return self.outage_status
        until, status = self.provider_outages.get(provider, (0.0, 503))
        return status if now < until else None

    async def _slow(self, provider: str) -> None:
        """The latency stage: every send answer of ``provider`` waits this long. A sleep,
        so other requests (other providers, the harness) are served meanwhile."""
        seconds = self.latency.get(provider, 0.0)
        if seconds > 0:
            await asyncio.sleep(seconds)

    async def nhs_app(self, request: web.Request) -> web.Response:
        response = await self._nhs_app_send(request)
        await self._slow("nhs_app")
        return response

    async def _nhs_app_send(self, request: web.Request) -> web.Response:
        refused = self._nhs_app_gate(request, limited=True)
        if refused is not None:
            return refused
        try:
            body = await request.json()
        except ValueError:
            return _outcome(400, "invalid", "body is not JSON")
        problem = _check_communication_request(body)
        if problem is not None:
            self.counts["invalid"] += 1
            return _outcome(400, "invalid", problem)
        reference = identifier(body, REQUEST_ID_SYSTEM) or str(uuid.uuid4())
        nhs_number = body["recipient"][0]["identifier"]["value"]
        # FHIR category: optional and ignored by the real API; we send the message type.
        message_type = str(((body.get("category") or [{}])[0] or {}).get("text", "sms"))
        send = self._record("nhs_app", reference, message_type)
        self._live(send, nhs_number)
        stall = self._stall()
        if stall:
            await asyncio.sleep(stall)  # accepted, but the answer comes too late
        return web.json_response(_communication(send, body), status=201)

    def _stall(self) -> float:
        if self.stalls <= 0:
            return 0.0
        self.stalls -= 1
        return self.stall_seconds

    async def receipts_report(self, request: web.Request) -> web.Response:
        refused = self._nhs_app_gate(request, limited=False)
        if refused is not None:
            return refused
        try:
            day = date.fromisoformat(request.query["day"])
        except KeyError:
            return _outcome(400, "invalid", "Missing required query parameter: day")
        except ValueError:
            return _outcome(400, "invalid", "day must be a date, YYYY-MM-DD")
        rows = [t for t in self.tasks if t["lastModified"][:10] == day.isoformat()]
        page, links = self._page(request, rows)
        bundle = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(rows),
            "link": [{"relation": rel, "url": url} for rel, url in links.items()],
            "entry": [{"fullUrl": f"urn:uuid:{t['id']}", "resource": t} for t in page],
        }
        return web.json_response(bundle)

    async def patients_report(self, request: web.Request) -> web.Response:
        refused = self._nhs_app_gate(request, limited=False)
        if refused is not None:
            return refused
        ods = request.query.get("ods-organisation-code")
        if not ods:
            return _outcome(
                400, "invalid", "Missing required query parameter: ods-organisation-code"
            )
        self.counts["patient_reports"] += 1
        rows = []
        for nhs in self.scenario.roster(ods):
            notifications = self.scenario.app_user(nhs)
            if notifications is not None:
                rows.append({"nhsNumber": nhs, "notificationsEnabled": notifications})
        page, links = self._page(request, rows)
        header = ", ".join(f'<{url}>; rel="{rel}"' for rel, url in links.items())
        return web.json_response(page, headers={"Link": header} if header else None)

    def _page(self, request: web.Request, rows: list[Any]) -> tuple[list[Any], dict[str, str]]:
        size = self.scenario.report_page_size
        try:
            number = max(1, int(request.query.get("page", "1")))
        except ValueError:
            number = 1
        last = max(1, -(-len(rows) // size))
        links = {"self": str(request.url), "last": str(request.url.update_query(page=last))}
        if number < last:
            links["next"] = str(request.url.update_query(page=number + 1))
        return rows[(number - 1) * size : number * size], links

    # --- Notify ----------------------------------------------------------------------------
    async def notify(self, request: web.Request) -> web.Response:
        response = await self._notify_send(request)
        await self._slow("notify")
        return response

    async def _notify_send(self, request: web.Request) -> web.Response:
        channel = "sms" if request.path == SMS_PATH else "email"
        down = self._outage("notify")
        if down is not None:
            self.counts["outage_refused"] += 1
            return _notify_error(down, "Exception", "Internal server error")
        header = request.headers.get("Authorization", "")
        try:
            if not header.startswith("Bearer "):
                raise AuthError("Unauthorized: authentication token must be provided")
            verify_notify_token(
                header.removeprefix("Bearer "),
                service_id=self.credentials.notify_service_id,
                secret=self.credentials.notify_secret,
                now=time.time(),
            )
        except AuthError as exc:
            self.counts["unauthorised"] += 1
            return _notify_error(403, "AuthError", str(exc))
        wait = self._notify_window.admit(time.monotonic())
        if wait is not None:
            self.counts["throttled"] += 1
            return _notify_error(
                429,
                "RateLimitError",
                f"Exceeded rate limit for key type LIVE of "
                f"{self.scenario.notify_rate_per_minute:g} requests per 60 seconds",
                retry_after=wait,
            )
        try:
            body = await request.json()
        except ValueError:
            return _notify_error(400, "BadRequestError", "body is not JSON")
        recipient = body.get("phone_number" if channel == "sms" else "email_address")
        missing = [k for k in ("template_id",) if not body.get(k)]
        if not recipient:
            missing.append("phone_number" if channel == "sms" else "email_address")
        if missing:
            self.counts["invalid"] += 1
            return _notify_error(400, "ValidationError", f"{missing[0]} is a required property")
        reference = body.get("reference") or str(uuid.uuid4())
        message_type = (body.get("personalisation") or {}).get("message_type", "sms")
        send = self._record(channel, reference, message_type)
        self._live(send, None)
        stall = self._stall()
        if stall:
            await asyncio.sleep(stall)  # accepted, but the answer comes too late
        return web.json_response(
            {
                "id": send.id,
                "reference": reference,
                "content": {"body": "(redacted)", "from_number": "GPSURGERY"},
                "uri": f"{request.url.origin()}/v2/notifications/{send.id}",
                "template": {"id": body["template_id"], "version": 1, "uri": ""},
            },
            status=201,
        )

    # --- the harness -----------------------------------------------------------------------
    async def list_sends(self, request: web.Request) -> web.Response:
        """Every notification made (a repeated reference counts again), and per reference how
        many: ``calls`` above 1 is a message the patient got more than once."""
        by_channel = Counter(s.channel for s in self.notifications)
        fallbacks = sum(
            1 for s in self.notifications if split_reference(s.reference)[1] == "fallback"
        )
        payload: dict[str, Any] = {
            "total": len(self.notifications),
            "distinct_references": len(self.sends),
            "by_channel": dict(by_channel),
            "fallbacks": fallbacks,
            # Sends whose reference was seen before: each made one more notification.
            "duplicates": self.counts["duplicates"],
            "lookups": self.counts["patient_reports"],
            "counts": dict(self.counts),
            "outage_until": self.outage_until,
            "outages": {
                p: {"until": until, "status": status}
                for p, (until, status) in self.provider_outages.items()
            },
            "latency": dict(self.latency),
            "token_refusal": self.token_refusal,
        }
        if request.query.get("references") == "1":
            ids: dict[str, list[str]] = collections.defaultdict(list)
            for s in self.notifications:
                ids[s.reference].append(s.id)
            payload["references"] = {
                ref: {
                    "channel": s.channel,
                    "received_at": s.received_at,  # of the first notification
                    "calls": s.calls,  # notifications made under this reference
                    "ids": ids[ref],
                }
                for ref, s in self.sends.items()
            }
        return web.json_response(payload)

    async def find_notifications(self, request: web.Request) -> web.Response:
        """Notify's ``GET /v2/notifications?reference=``: every notification sent under a
        reference, newest first as Notify lists them."""
        down = self._outage("notify")
        if down is not None:
            self.counts["outage_refused"] += 1
            return _notify_error(down, "Exception", "Internal server error")
        reference = request.query.get("reference")
        found = [
            {"id": s.id, "reference": s.reference, "type": s.channel, "status": "created"}
            for s in reversed(self.notifications)
            if s.channel != "nhs_app" and (reference is None or s.reference == reference)
        ]
        return web.json_response({"notifications": found, "links": {}})

    async def stall(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.stalls = int(body.get("count", 1))
        self.stall_seconds = float(body.get("seconds", 10))
        return web.json_response({"stalls": self.stalls})

    async def outage(self, request: web.Request) -> web.Response:
        """``{"seconds", "status", "provider": "nhs_app"|"notify"|"all"}``; all by default.
        ``seconds`` 0 ends it."""
        body = await request.json()
        provider = str(body.get("provider", "all"))
        if provider not in (*PROVIDERS, "all"):
            return web.json_response({"error": f"unknown provider {provider}"}, status=400)
        until = time.time() + float(body.get("seconds", 30))
        status = int(body.get("status", 503))
        if provider == "all":
            self.outage_until, self.outage_status = until, status
        else:
            self.provider_outages[provider] = (until, status)
        return web.json_response({"provider": provider, "until": until})

    async def set_latency(self, request: web.Request) -> web.Response:
        """``{"provider": "nhs_app"|"notify"|"all", "seconds": 0.1}``: each send to that
        provider is answered this much later (after being acted on, as a slow provider
        would). ``seconds`` 0 removes it."""
        body = await request.json()
        provider = str(body.get("provider", "all"))
        if provider not in (*PROVIDERS, "all"):
            return web.json_response({"error": f"unknown provider {provider}"}, status=400)
        seconds = max(0.0, float(body.get("seconds", 0)))
        for p in PROVIDERS if provider == "all" else (provider,):
            self.latency[p] = seconds
        return web.json_response({"latency": self.latency})

    async def set_token(self, request: web.Request) -> web.Response:
        """``{"refuse": true, "status": 401}``: the token endpoint refuses while on, and the
        access tokens issued so far are revoked at once (so every NHS App call gets 401 and
        renewing fails). ``{"refuse": false}`` lets renewal succeed again."""
        body = await request.json()
        if body.get("refuse", True):
            self.token_refusal = int(body.get("status", 401))
            self._tokens.clear()
        else:
            self.token_refusal = None
        return web.json_response({"token_refusal": self.token_refusal})

    # --- behaviour -------------------------------------------------------------------------
    def _record(self, channel: str, reference: str, message_type: str) -> Send:
        """A new notification, even for a reference seen before (neither provider
        de-duplicates); a repeat is counted on the reference's first notification."""
        send = Send(str(uuid.uuid4()), channel, reference, message_type)
        first = self.sends.get(reference)
        if first is None:
            self.sends[reference] = send
        else:
            first.calls += 1
            self.counts["duplicates"] += 1
            self.counts[f"duplicates_{channel}"] += 1
        self.notifications.append(send)
        return send

    def _live(self, send: Send, nhs_number: str | None) -> None:
        if not self.scenario.send_callbacks:
            return
        coro = (
            self._live_nhs_app(send, nhs_number)
            if send.channel == "nhs_app"
            else self._live_notify(send)
        )
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _after(self, simulated_seconds: float) -> None:
        await asyncio.sleep(simulated_seconds / self.scenario.time_scale)

    async def _live_nhs_app(self, send: Send, nhs_number: str | None) -> None:
        outcome = app_outcome(self.scenario, send.reference, send.message_type)
        await self._after(outcome.delivered_after)
        if outcome.status == "rejected":
            await self._task(send, "Rejected")
            return
        await self._task(send, "Delivered")
        await self._task(send, "NotificationAttempted")
        if outcome.status == "unnotified":
            await self._task(send, "Unnotified")
            return
        await self._task(send, "Notified")
        if outcome.read_after is None:
            return
        await self._after(outcome.read_after)
        await self._task(send, "Read")
        if outcome.respond_after is not None:
            await self._after(outcome.respond_after)
            await self._respond(send)

    async def _live_notify(self, send: Send) -> None:
        outcome = text_outcome(
            self.scenario, send.reference, send.message_type, channel=send.channel
        )
        await self._after(outcome.delivered_after)
        now = _iso(time.time())
        await self._post(
            "notify",
            "/callbacks/notify",
            {
                "id": send.id,
                "reference": send.reference,
                "to": "redacted",
                "status": "permanent-failure" if outcome.failed else "delivered",
                "created_at": _iso(send.received_at),
                "completed_at": now,
                "sent_at": now,
                "notification_type": send.channel,
            },
        )
        if outcome.respond_after is not None:
            await self._after(outcome.respond_after)
            await self._respond(send)

    async def _respond(self, send: Send) -> None:
        message_id, _ = split_reference(send.reference)
        if message_id in self.responded:
            return  # one response per message, whichever leg it came through
        self.responded.add(message_id)
        await self._post(
            "responses",
            "/callbacks/responses",
            {"message_id": message_id, "responded_at": _iso(time.time()), "attachments": 0},
        )

    async def _task(self, send: Send, status: str) -> None:
        task = {
            "resourceType": "Task",
            "id": str(uuid.uuid4()),
            "intent": "order",
            "identifier": [
                {"system": CAMPAIGN_SYSTEM, "value": "appfirst"},
                {"system": REQUEST_ID_SYSTEM, "value": send.reference},
                {"system": COMMUNICATION_ID_SYSTEM, "value": send.id},
            ],
            "status": "rejected" if status == "Rejected" else "completed",
            "code": {"coding": [{"system": STATUS_SYSTEM, "code": status}]},
            "authoredOn": _iso(send.received_at),
            "lastModified": _iso(time.time()),
        }
        self.tasks.append(task)
        if self.scenario.rng(f"{send.reference}:{status}").random() < (
            self.scenario.callback_loss_share
        ):
            self.counts["callbacks_lost"] += 1
            return  # only the daily report will tell
        await self._post("nhs_app", "/callbacks/nhs-app", task)

    async def _post(self, provider: str, path: str, body: dict[str, Any]) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(5.0))
        headers = {"Authorization": f"Bearer {self.credentials.callback_tokens[provider]}"}
        for attempt in range(8):
            try:
                resp = await self._client.post(self.callback_url + path, json=body, headers=headers)
                if resp.status_code < 500:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2 * 2**attempt)
        self.counts["callbacks_undelivered"] += 1
        log.warning("callback %s could not be delivered", path)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._client is not None:
            await self._client.aclose()


def _check_communication_request(body: Any) -> str | None:
    """The checks the NHS App applies, with its wording; None if the request is valid."""
    if not isinstance(body, dict) or body.get("resourceType") != "CommunicationRequest":
        return "Invalid resource type"
    try:
        recipient = body["recipient"]
        payload = body["payload"][0]["contentString"]
    except (KeyError, IndexError, TypeError):
        return "Missing recipient or payload"
    if not isinstance(recipient, list) or len(recipient) != 1:
        return "Exactly one recipient is required"
    ident = (recipient[0] or {}).get("identifier") or {}
    if ident.get("system") != NHS_NUMBER_SYSTEM or not is_valid_nhs_number(
        str(ident.get("value", ""))
    ):
        return "Invalid NHS number"
    if not isinstance(payload, str) or not payload.strip():
        return "payload contentString is required"
    if len(payload) > MAX_CONTENT:
        return f"contentString must be {MAX_CONTENT} characters or fewer"
    requester = ((body.get("requester") or {}).get("identifier") or {}).get("value", "")
    if not isinstance(requester, str) or not (3 <= len(requester) <= 10):
        return "Invalid requester ODS code"
    return None


def _communication(send: Send, body: dict[str, Any]) -> dict[str, Any]:
    return {
        **body,
        "id": send.id,
        "identifier": [
            {"system": COMMUNICATION_ID_SYSTEM, "value": send.id},
            *(body.get("identifier") or []),
        ],
    }


def _outcome(status: int, code: str, text: str, retry_after: float | None = None) -> web.Response:
    headers = {"Retry-After": f"{max(0.001, retry_after):.3f}"} if retry_after is not None else None
    return web.json_response(
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "diagnostics": text}],
        },
        status=status,
        headers=headers,
        content_type="application/fhir+json",
    )


def _oauth_error(error: str, description: str, status: int = 401) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=status)


def _notify_error(
    status: int, error: str, message: str, retry_after: float | None = None
) -> web.Response:
    headers = {"Retry-After": f"{max(0.001, retry_after):.3f}"} if retry_after is not None else None
    return web.json_response(
        {"status_code": status, "errors": [{"error": error, "message": message}]},
        status=status,
        headers=headers,
    )


def build_app(sim: Simulator) -> web.Application:
    app = web.Application()
    app.router.add_post(TOKEN_PATH, sim.token)
    app.router.add_post(NHS_APP_PREFIX + NHS_APP_PATH, sim.nhs_app)
    app.router.add_get(NHS_APP_PREFIX + RECEIPTS_REPORT, sim.receipts_report)
    app.router.add_get(NHS_APP_PREFIX + PATIENTS_REPORT, sim.patients_report)
    app.router.add_post(SMS_PATH, sim.notify)
    app.router.add_post(EMAIL_PATH, sim.notify)
    app.router.add_get("/_sim/sends", sim.list_sends)
    app.router.add_get(LIST_PATH, sim.find_notifications)
    app.router.add_post("/_sim/outage", sim.outage)
    app.router.add_post("/_sim/stall", sim.stall)
    app.router.add_post("/_sim/latency", sim.set_latency)
    app.router.add_post("/_sim/token", sim.set_token)

    async def _close(_: web.Application) -> None:
        await sim.close()

    app.on_cleanup.append(_close)
    return app


async def serve(sim: Simulator, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(build_app(sim), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
