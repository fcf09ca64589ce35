"""NHS App messaging API client: in-app messages as FHIR R4 ``CommunicationRequest``.

Shapes follow the published specification (NHSDigital/nhs-app-api, ``nhs-app.yaml``): the
request carries our reference as the ``request-id`` identifier, the answer carries the NHS
App communication id, and errors are ``OperationOutcome`` resources.
"""

from __future__ import annotations

from typing import Any

import httpx

from appfirst.errors import ProviderRejected, ProviderUnavailable, Throttled, Unauthorised
from appfirst.providers.auth import SignedJwtAuth
from appfirst.providers.base import Outbound
from appfirst.providers.http import AMBIGUOUS_STATUSES, json_or_empty, retry_after, unavailable

PATH = "/communication/in-app/FHIR/R4/CommunicationRequest"
NHS_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
ODS_SYSTEM = "https://fhir.nhs.uk/Id/ods-organization-code"
REQUEST_ID_SYSTEM = "https://fhir.nhs.uk/NHSApp/request-id"
CAMPAIGN_SYSTEM = "https://fhir.nhs.uk/NHSApp/campaign-id"
COMMUNICATION_ID_SYSTEMS = frozenset(
    {
        "https://fhir.nhs.uk/Id/nhs-app-communication-id",
        "http://fhir.nhs.uk/Id/nhs-app-communication-id",
    }
)
MAX_CONTENT = 5000  # characters, markdown included


def communication_request(message: Outbound, campaign_id: str) -> dict[str, Any]:
    return {
        "resourceType": "CommunicationRequest",
        "identifier": [
            {"system": CAMPAIGN_SYSTEM, "value": campaign_id},
            {"system": REQUEST_ID_SYSTEM, "value": message.reference},
        ],
        "status": "active",
        # Optional in FHIR and ignored by the NHS App; kept for our own receipts and tests.
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


def identifier(resource: dict[str, Any], systems: frozenset[str] | str) -> str | None:
    wanted = {systems} if isinstance(systems, str) else systems
    for item in resource.get("identifier") or []:
        if isinstance(item, dict) and item.get("system") in wanted and item.get("value"):
            return str(item["value"])
    return None


def outcome_code(response: httpx.Response) -> tuple[str, str]:
    """(issue code, diagnostics) of an ``OperationOutcome``; diagnostics never reach logs,
    since a validation message may quote what was sent."""
    try:
        issue = response.json()["issue"][0]
        return str(issue.get("code", "unknown")), str(issue.get("diagnostics", ""))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return "unknown", ""


def throttle_kind(diagnostics: str) -> str:
    text = diagnostics.lower()
    # Wording of the published examples: "...has created a spike in traffic...", "This API
    # is currently receiving a high volume of requests...", "...has exceeded its quota...".
    if "spike" in text:
        return "spike_arrest"
    if "proxy" in text or "high volume" in text:
        return "quota_per_proxy"
    if "quota" in text:
        return "quota_per_app"
    return "throttled"


def raise_for_outcome(provider: str, response: httpx.Response) -> None:
    status = response.status_code
    if status < 400:
        return
    code, diagnostics = outcome_code(response)
    if status == 429:
        raise Throttled(
            provider,
            "rate limited",
            kind=throttle_kind(diagnostics),
            retry_after=retry_after(response),
        )
    if status == 401:
        raise Unauthorised(provider, f"HTTP 401 ({code})", status=401)
    if status >= 500 or status in (408, 425):
        raise ProviderUnavailable(
            provider,
            f"HTTP {status}",
            status=status,
            retry_after=retry_after(response),
            ambiguous=status in AMBIGUOUS_STATUSES,
        )
    # 400 (invalid), 403 (forbidden: permissions not granted), 404, 413...
    raise ProviderRejected(provider, f"HTTP {status} ({code})", status=status, code=code)


class NhsAppClient:
    name = "nhs_app"

    def __init__(
        self, client: httpx.AsyncClient, base_url: str, campaign_id: str, auth: SignedJwtAuth
    ) -> None:
        self._client = client
        self._url = base_url.rstrip("/") + PATH
        self._campaign = campaign_id
        self._auth = auth

    async def send(self, message: Outbound) -> str:
        if message.nhs_number is None:
            raise ProviderRejected(self.name, "no NHS number", code="invalid")
        auth = await self._auth.headers()
        token = auth["Authorization"]
        try:
            response = await self._client.post(
                self._url,
                json=communication_request(message, self._campaign),
                headers={"X-Correlation-ID": message.reference, **auth},
            )
        except httpx.HTTPError as exc:
            raise unavailable(self.name, exc) from exc
        if response.status_code == 401:
            self._auth.invalidate(token)
        raise_for_outcome(self.name, response)
        return identifier(json_or_empty(response), COMMUNICATION_ID_SYSTEMS) or ""
