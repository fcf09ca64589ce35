"""SMS and email through a GOV.UK Notify-shaped API (``/v2/notifications/sms|email``)."""

from __future__ import annotations

import httpx

from appfirst.errors import ProviderRejected, ProviderUnavailable
from appfirst.providers.base import Outbound
from appfirst.providers.http import raise_for_status


class NotifyClient:
    name = "notify"

    def __init__(self, client: httpx.AsyncClient, base_url: str, template_id: str) -> None:
        self._client = client
        self._base = base_url.rstrip("/")
        self._template = template_id

    async def send(self, message: Outbound) -> str:
        if message.channel == "sms":
            path, recipient = "/v2/notifications/sms", {"phone_number": message.mobile}
        elif message.channel == "email":
            path, recipient = "/v2/notifications/email", {"email_address": message.email}
        else:
            raise ProviderRejected(self.name, f"cannot send {message.channel}")
        body = {
            **recipient,
            "template_id": self._template,
            "personalisation": {"body": message.body, "message_type": message.message_type},
            "reference": message.reference,
        }
        try:
            response = await self._client.post(self._base + path, json=body)
        except httpx.TransportError as exc:
            raise ProviderUnavailable(self.name, type(exc).__name__) from exc
        raise_for_status(self.name, response)
        return str(response.json().get("id", ""))
