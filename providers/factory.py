"""Provider clients built from settings: the one place that knows which URLs, keys and
limits belong together, for the simulator and for live."""

from __future__ import annotations

from pathlib import Path

import httpx
from cryptography.hazmat.primitives import serialization

from appfirst.errors import ProviderRejected
from appfirst.providers.auth import SignedJwtAuth, ensure_sandbox_key, split_notify_key
from appfirst.providers.eligibility import PracticeReportLookup
from appfirst.providers.gateway import Gateway
from appfirst.providers.nhsapp import NhsAppClient
from appfirst.providers.notify import NotifyClient
from appfirst.providers.reports import ReportsClient
from appfirst.rules.sending import GiveUp
from appfirst.settings import Settings


class ConfigurationError(Exception):
    pass


def sandbox_key_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / "sandbox" / "nhs-app-private-key.pem"


def nhs_app_private_key(settings: Settings) -> bytes:
    """The PEM key our JWTs are signed with. With the simulator and no key configured, a
    sandbox key made on first use in the data directory (the simulator trusts it)."""
    if settings.nhs_app_private_key_path:
        return Path(settings.nhs_app_private_key_path).read_bytes()
    if settings.providers == "simulator":
        return ensure_sandbox_key(sandbox_key_path(settings))
    raise ConfigurationError("APPFIRST_NHS_APP_PRIVATE_KEY_PATH is required with live providers")


def check(settings: Settings) -> None:
    """Refuse to start with provider credentials that cannot work, rather than fail (and
    hold every message) at the first send."""
    if settings.providers == "off":
        return
    try:
        serialization.load_pem_private_key(nhs_app_private_key(settings), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigurationError(f"NHS App private key unusable: {type(exc).__name__}") from exc
    try:
        split_notify_key(settings.notify_api_key.get_secret_value())
    except ProviderRejected as exc:
        raise ConfigurationError(
            "APPFIRST_NOTIFY_API_KEY is not {name}-{service}-{secret}"
        ) from exc


def nhs_app_auth(settings: Settings, http: httpx.AsyncClient) -> SignedJwtAuth:
    _, token_url, _ = settings.provider_urls()
    return SignedJwtAuth(
        http,
        token_url=token_url,
        api_key=settings.nhs_app_api_key,
        private_key_pem=nhs_app_private_key(settings),
        key_id=settings.nhs_app_key_id,
    )


def gateway(settings: Settings) -> Gateway:
    nhs_app_url, _, notify_url = settings.provider_urls()
    http = httpx.AsyncClient(
        timeout=httpx.Timeout(settings.provider_timeout_seconds),
        # Room for every request the two lanes may have in flight at once.
        limits=httpx.Limits(
            max_connections=settings.send_concurrency_nhs_app + settings.send_concurrency_notify,
            max_keepalive_connections=settings.send_concurrency_nhs_app
            + settings.send_concurrency_notify,
        ),
    )
    return Gateway(
        http=http,
        nhs_app=NhsAppClient(
            http, nhs_app_url, settings.nhs_app_campaign_id, nhs_app_auth(settings, http)
        ),
        notify=NotifyClient(
            http,
            notify_url,
            settings.notify_api_key,
            sms_template_id=settings.notify_sms_template_id,
            email_template_id=settings.notify_email_template_id,
        ),
        nhs_app_per_second=settings.nhs_app_rate_per_second,
        notify_per_second=settings.notify_rate_per_minute / 60.0,
        give_up=GiveUp(settings.nhs_app_give_up_seconds),
    )


def eligibility_lookup(settings: Settings) -> PracticeReportLookup:
    return PracticeReportLookup(reports(settings), timeout=settings.eligibility_timeout_seconds)


def reports(settings: Settings) -> ReportsClient:
    nhs_app_url, _, _ = settings.provider_urls()
    http = httpx.AsyncClient(timeout=httpx.Timeout(max(30.0, settings.provider_timeout_seconds)))
    return ReportsClient(http, nhs_app_url, nhs_app_auth(settings, http))
