"""Typed, frozen settings read from the environment (prefix ``APPFIRST_``).

The names and defaults of the public settings are fixed by the contract; the rest are
operational knobs with safe defaults. Secrets are ``SecretStr`` so they never print.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from appfirst.rules.routing import Deadlines


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="APPFIRST_", frozen=True, extra="ignore")

    # --- contract settings -------------------------------------------------------------
    broker: str | None = Field(
        default=None, description="kafka://host:port; unset = a command's embedded broker"
    )
    topic_prefix: str = "appfirst."
    codec: Literal["json", "avro"] = "json"
    schema_registry_url: str | None = None
    providers: Literal["simulator", "live", "off"] = "simulator"
    fallback_individual_seconds: float = Field(default=3600, gt=0)
    fallback_bp_monitoring_seconds: float = Field(default=10800, gt=0)
    fallback_batch_seconds: float = Field(default=86400, gt=0)
    metric_horizons: Annotated[tuple[int, ...], NoDecode] = (3600, 10800, 86400, 604800)
    web_port: int = Field(default=6066, ge=0, le=65535)
    web_host: str = "127.0.0.1"
    role: Literal["all", "streams", "dispatcher"] = Field(
        default="all",
        description="what a worker process runs: everything, all but the dispatcher, "
        "or only the dispatcher (its own consumer group)",
    )

    # --- operational ---------------------------------------------------------------------
    partitions: int = Field(
        default=4, ge=1, le=65535, description="partitions of every keyed topic"
    )
    replication_factor: int = Field(default=1, ge=1)
    session_timeout_seconds: float = Field(default=10, gt=0)
    sweep_interval_seconds: float = Field(default=0.25, gt=0)
    allowed_lateness_seconds: float = Field(
        default=5.0, ge=0, description="how far out of time order receipts may arrive"
    )
    clock: Literal["live", "replay"] = "live"
    metrics_publish_seconds: float = Field(default=2.0, gt=0)
    producer_linger_seconds: float = Field(
        default=0.0, ge=0, description="how long output waits to be batched with more"
    )
    route_batch: int = Field(default=500, ge=1, description="send requests routed per flush")
    route_within: float = Field(
        default=0.005, gt=0, description="seconds a batch waits to fill before routing"
    )
    metrics_batch: int = Field(
        default=50,
        ge=1,
        description="metric-facts records (up to 1,000 facts each) counted per write of a "
        "practice's row: a batch is counted in one step of the event loop, so this bounds "
        "how long the loop (and the fallback sweep) waits on it",
    )
    metrics_within: float = Field(
        default=1.0,
        gt=0,
        description="seconds a batch of metric facts waits to fill (metrics are published "
        "every METRICS_PUBLISH_SECONDS, so waiting costs nothing a reader sees)",
    )
    commit_interval_seconds: float = Field(
        default=2.8, gt=0, description="how often processed offsets are committed (Faust's)"
    )
    keep_settled_seconds: float = Field(
        default=4 * 86400,
        gt=0,
        description="how long a settled per-message row (routing decision, send, deadline, "
        "number) is kept to absorb a repeat: longer than the 24 h batch deadline and "
        "Notify's 72 h of delivery retries",
    )
    keep_sent_metrics_seconds: float = Field(
        default=8 * 86400,
        gt=0,
        description="how long a sent message's row keeps its pilot facts: a response counts up to "
        "7 days after sending, and one later than this is refused without being recognised "
        "as late",
    )
    retention_interval_seconds: float = Field(
        default=30.0, gt=0, description="how often rows past their end are deleted"
    )
    metric_trend_days: int = Field(
        default=56, ge=1, description="days of daily trend kept (windows expire after)"
    )
    broker_check_seconds: float = Field(
        default=5.0, gt=0, description="how long /readyz reuses its broker check's answer"
    )
    consumer_lag_seconds: float = Field(
        default=5.0, gt=0, description="how often appfirst_consumer_lag is refreshed"
    )
    data_dir: str = "var/appfirst"
    row_store: Literal["disk", "memory"] = Field(
        default="disk", description="where the per-message tables keep their rows"
    )
    changelog_slack_rows: int = Field(
        default=10_000,
        ge=0,
        description="rows a per-message table's changelog partition may hold beyond twice "
        "the partition's rows before they are written again and the older batches "
        "tombstoned (recovery reads at most about that)",
    )
    row_memory_mb: float = Field(
        default=8, gt=0, description="RocksDB's memory for the rows on disk (buffers, cache)"
    )
    simulator_url: str = "http://127.0.0.1:8900"
    # --- providers: what a live deployment must set (docs/operations.md "Going live") ----
    nhs_app_url: str = Field(
        default="https://api.service.nhs.uk/nhs-app", description="NHS App API base URL"
    )
    nhs_app_token_url: str = "https://api.service.nhs.uk/oauth2/token"  # noqa: S105
    nhs_app_api_key: SecretStr = SecretStr("appfirst-sandbox-api-key")
    nhs_app_key_id: str = Field(default="appfirst-sandbox-1", description="kid of the JWKS key")
    nhs_app_private_key_path: str | None = Field(
        default=None, description="PEM private key; unset with the simulator = a sandbox key"
    )
    nhs_app_campaign_id: str = "appfirst"
    nhs_app_rate_per_second: float = Field(default=20, gt=0)
    notify_url: str = "https://api.notifications.service.gov.uk"
    notify_api_key: SecretStr = SecretStr(
        "appfirst_sandbox-9d4a1f3e-0b7c-4e2a-9f55-3c1d2b6e8a70-5e8f2c1a-7d3b-4a96-8e0f-1b2c3d4e5f60"
    )
    notify_sms_template_id: str = "f1e2d3c4-b5a6-4978-8695-a4b3c2d1e0f9"
    notify_email_template_id: str = "0a1b2c3d-4e5f-4061-8273-94a5b6c7d8e9"
    notify_rate_per_minute: float = Field(default=3000, gt=0)
    sms_fragment_price: float = Field(
        default=0.0227, ge=0, description="GBP per SMS fragment, for the report's costs"
    )
    callback_token: SecretStr = SecretStr("appfirst-dev-callback-token")
    batch_token: SecretStr = Field(
        default=SecretStr("appfirst-dev-batch-token"),
        description="bearer token of the batch endpoints (the practice front end)",
    )
    nhs_app_callback_token: SecretStr | None = Field(
        default=None, description="unset = callback_token"
    )
    notify_callback_token: SecretStr | None = Field(
        default=None, description="unset = callback_token"
    )
    provider_timeout_seconds: float = Field(default=5.0, gt=0)
    nhs_app_give_up_seconds: float = Field(
        default=300,
        gt=0,
        description="an NHS App message not accepted this long after its first attempt "
        "(or any, once the NHS App has failed every call this long) falls back to SMS at once",
    )
    nhs_app_outcome_wait_seconds: float = Field(
        default=3600,
        gt=0,
        description="the fallback deadline starts when the NHS App accepts a message, or "
        "this long after dispatch if no outcome is heard (a backlog of 72,000 at 20/s)",
    )
    send_concurrency_nhs_app: int = Field(
        default=32, ge=1, description="NHS App requests in flight at once per worker"
    )
    send_concurrency_notify: int = Field(
        default=64, ge=1, description="Notify requests in flight at once per worker"
    )
    send_window: int = Field(
        default=50_000,
        ge=1,
        description="sends a worker holds (queued or in flight) before it stops reading",
    )
    share_provider_limits: bool = Field(
        default=True,
        description="pace each worker at its share (owned partitions) of each provider limit",
    )
    callback_ack_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="the most a callback waits for the broker to acknowledge its record; "
        "past it the provider is told 503 and retries",
    )
    eligibility_timeout_seconds: float = Field(
        default=0.25, gt=0, description="the most a cache miss may hold up routing"
    )
    likely_to_fail_days: float = Field(default=90, gt=0)
    number_hash_key: SecretStr = SecretStr("appfirst-dev-number-key")
    log_level: str = "info"
    fault_once: str | None = Field(
        default=None,
        description="tests only: the fault point (Context.fault_point) that fails once",
    )

    @model_validator(mode="after")
    def _no_sandbox_secrets_live(self) -> Settings:
        """Live providers with a sandbox secret would accept forged receipts (the sandbox
        callback token is public) or fail every send: refuse to start instead."""
        if self.providers != "live":
            return self
        defaults = type(self).model_fields
        unset = [
            name
            for name in (
                "callback_token",
                "batch_token",
                "nhs_app_api_key",
                "notify_api_key",
                "number_hash_key",
            )
            if getattr(self, name) == defaults[name].default
        ]
        if self.nhs_app_private_key_path is None:
            unset.append("nhs_app_private_key_path")
        if unset:
            names = ", ".join(f"APPFIRST_{n.upper()}" for n in unset)
            raise ValueError(f"live providers need real values for: {names}")
        return self

    @field_validator("metric_horizons", mode="before")
    @classmethod
    def _parse_horizons(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",") if p.strip()]
            return tuple(int(p) for p in parts)
        return value

    @field_validator("metric_horizons")
    @classmethod
    def _check_horizons(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(h <= 0 for h in value):
            raise ValueError("metric horizons must be positive seconds")
        return tuple(sorted(set(value)))

    def provider_urls(self) -> tuple[str, str, str]:
        """(NHS App base, NHS App token endpoint, Notify base) for the providers in use."""
        if self.providers == "simulator":
            base = self.simulator_url.rstrip("/")
            return base + "/nhs-app", base + "/oauth2/token", base
        return self.nhs_app_url.rstrip("/"), self.nhs_app_token_url, self.notify_url.rstrip("/")

    def callback_tokens(self) -> dict[str, SecretStr]:
        return {
            "nhs_app": self.nhs_app_callback_token or self.callback_token,
            "notify": self.notify_callback_token or self.callback_token,
            "responses": self.callback_token,
        }

    def deadlines(self) -> Deadlines:
        """The fallback deadlines, by origin and message type."""
        return Deadlines(
            individual=self.fallback_individual_seconds,
            bp_monitoring=self.fallback_bp_monitoring_seconds,
            batch=self.fallback_batch_seconds,
        )

    def topic(self, name: str) -> str:
        """Full topic name for a contract topic name such as ``send-requests``."""
        return f"{self.topic_prefix}{name}"

    @property
    def bootstrap(self) -> str:
        """host:port list for aiokafka, from ``kafka://host:port[;host:port]``."""
        if not self.broker:
            raise ValueError("APPFIRST_BROKER is not set")
        return ",".join(
            u.removeprefix("kafka://") for u in self.broker.replace(";", ",").split(",")
        )


def settings_from_env(env: dict[str, str]) -> Settings:
    """Settings from an ``APPFIRST_*`` mapping other than this process's environment."""
    values: dict[str, Any] = {
        k.removeprefix("APPFIRST_").lower(): v for k, v in env.items() if k.startswith("APPFIRST_")
    }
    return Settings.model_validate(values)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
