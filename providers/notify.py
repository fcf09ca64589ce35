"""SMS and email through a GOV.UK Notify-shaped API (``/v2/notifications/sms|email``).

Each request carries a fresh HS256 JWT made from the API key. Errors come as
``{"status_code": n, "errors": [{"error": "...Error", "message": "..."}]}``.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from pydantic import SecretStr

from appfirst.errors import ProviderRejected, ProviderUnavailable, Throttled, Unauthorised
from appfirst.providers.auth import notify_token
from appfirst.providers.base import Outbound
from appfirst.providers.http import AMBIGUOUS_STATUSES, json_or_empty, retry_after, unavailable

SMS_PATH = "/v2/notifications/sms"
EMAIL_PATH = "/v2/notifications/email"
LIST_PATH = "/v2/notifications"


def notification(message: Outbound, template_id: str) -> tuple[str, dict[str, Any]]:
    """(path, body) of a Notify send for this message."""
    if message.channel == "sms":
        path, recipient = SMS_PATH, {"phone_number": message.mobile}
    elif message.channel == "email":
        path, recipient = EMAIL_PATH, {"email_address": message.email}
    else:
        raise ProviderRejected("notify", f"cannot send {message.channel}", code="invalid")
    body = {
        **recipient,
        "template_id": template_id,
        "personalisation": {"body": message.body, "message_type": message.message_type},
        "reference": message.reference,
    }
    return path, body


def error_name(response: httpx.Response) -> str:
    try:
        return str(response.json()["errors"][0]["error"])
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return "unknown"


def raise_for_notify(response: httpx.Response) -> None:
    status = response.status_code
    if status < 400:
        return
    name = error_name(response)
    if status == 429:
        # RateLimitError: per-minute limit; TooManyRequestsError: the daily message limit.
        kind = "daily_limit" if name == "TooManyRequestsError" else "rate_limit"
        wait = retry_after(response)
        raise Throttled("notify", name, kind=kind, retry_after=wait if wait else 60.0)
    if status in (401, 403):
        # AuthError. No channel is below SMS: hold the message and alert, never drop it.
        raise Unauthorised("notify", f"HTTP {status} ({name})", status=status, retry_after=30.0)
    if status >= 500 or status in (408, 425):
        raise ProviderUnavailable(
            "notify",
            f"HTTP {status}",
            status=status,
            retry_after=retry_after(response),
            ambiguous=status in AMBIGUOUS_STATUSES,
        )
    raise ProviderRejected("notify", f"HTTP {status} ({name})", status=status, code=name)


class NotifyClient:
    name = "notify"

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        api_key: SecretStr,
        *,
        sms_template_id: str,
        email_template_id: str,
    ) -> None:
        self._client = client
        self._base = base_url.rstrip("/")
        self._key = api_key
        self._templates = {"sms": sms_template_id, "email": email_template_id}
        self._uncertain: set[str] = set()  # references whose last send may have arrived

    async def send(self, message: Outbound) -> str:
        path, body = notification(message, self._templates.get(message.channel, ""))
        if message.reference in self._uncertain:
            # The last try may have reached Notify: ask before sending again.
            found = await self.find(message.reference)
            if found is not None:
                self._uncertain.discard(message.reference)
                return found
        try:
            response = await self._client.post(
                self._base + path, json=body, headers=self._headers()
            )
        except httpx.HTTPError as exc:
            error = unavailable(self.name, exc)
            if error.ambiguous:
                self._uncertain.add(message.reference)
            raise error from exc
        if response.status_code in AMBIGUOUS_STATUSES:
            self._uncertain.add(message.reference)
        raise_for_notify(response)
        self._uncertain.discard(message.reference)
        return str(json_or_empty(response).get("id", ""))

    async def find(self, reference: str) -> str | None:
        """The id of a notification we sent with this reference, if Notify has one."""
        try:
            response = await self._client.get(
                self._base + LIST_PATH, params={"reference": reference}, headers=self._headers()
            )
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(self.name, type(exc).__name__) from exc
        raise_for_notify(response)
        for item in json_or_empty(response).get("notifications") or []:  # type: ignore[attr-defined]
            if isinstance(item, dict) and item.get("reference") == reference and item.get("id"):
                return str(item["id"])
        return None

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {notify_token(self._key, time.time())}"}
