"""NHS App messaging API client: in-app messages as FHIR R4 ``CommunicationRequest``."""

from __future__ import annotations

from typing import Any

import httpx

from appfirst.errors import ProviderUnavailable
from appfirst.providers.base import Outbound
from appfirst.providers.http import raise_for_status

PATH = "/communication/in-app/FHIR/R4/CommunicationRequest"
NHS_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
ODS_SYSTEM = "https://fhir.nhs.uk/Id/ods-organization-code"
REQUEST_ID_SYSTEM = "urn:ietf:rfc:3986"
CAMPAIGN_SYSTEM = "https://fhir.nhs.uk/NHSApp/campaign-id"


def communication_request(message: Outbound, campaign_id: str) -> dict[str, Any]:
    return {
        "resourceType": "CommunicationRequest",
        "identifier": [
            {"system": CAMPAIGN_SYSTEM, "value": campaign_id},
            {"system": REQUEST_ID_SYSTEM, "value": message.reference},
        ],
        "status": "active",
        "intent": "order",
        "category": [{"text": message.message_type}],
        "payload": [{"contentString": message.body}],
        "recipient": [
            {
                "type": "Patient",
                "identifier": {"system": NHS_NUMBER_SYSTEM, "value": message.nhs_number},
            }
        ],
        "requester": {
            "type": "Organization",
            "identifier": {"system": ODS_SYSTEM, "value": message.ods_code},
        },
    }


class NhsAppClient:
    name = "nhs_app"

    def __init__(self, client: httpx.AsyncClient, base_url: str, campaign_id: str) -> None:
        self._client = client
        self._url = base_url.rstrip("/") + PATH
        self._campaign = campaign_id

    async def send(self, message: Outbound) -> str:
        try:
            response = await self._client.post(
                self._url,
                json=communication_request(message, self._campaign),
                headers={"X-Correlation-ID": message.reference},
            )
        except httpx.TransportError as exc:
            raise ProviderUnavailable(self.name, type(exc).__name__) from exc
        raise_for_status(self.name, response)
        return str(response.json().get("id", ""))
