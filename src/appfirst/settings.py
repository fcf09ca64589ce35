"""Typed, frozen settings read from the environment (prefix ``APPFIRST_``).

The names and defaults of the public settings are fixed by the contract; the rest are
operational knobs with safe defaults. Secrets are ``SecretStr`` so they never print.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


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

    # --- operational ---------------------------------------------------------------------
    partitions: int = Field(default=4, ge=1, description="partitions of every keyed topic")
    replication_factor: int = Field(default=1, ge=1)
    session_timeout_seconds: float = Field(default=10, gt=0)
    sweep_interval_seconds: float = Field(default=1.0, gt=0)
    allowed_lateness_seconds: float = Field(
        default=5.0, ge=0, description="how far out of time order receipts may arrive"
    )
    clock: Literal["live", "replay"] = "live"
    metrics_publish_seconds: float = Field(default=2.0, gt=0)
    data_dir: str = "var/appfirst"
    simulator_url: str = "http://127.0.0.1:8900"
    live_url: str = "https://api.service.nhs.uk"
    callback_token: SecretStr = SecretStr("appfirst-dev-callback-token")
    provider_timeout_seconds: float = Field(default=5.0, gt=0)
    eligibility_timeout_seconds: float = Field(
        default=0.25, gt=0, description="the most a cache miss may hold up routing"
    )
    likely_to_fail_days: float = Field(default=90, gt=0)
    number_hash_key: SecretStr = SecretStr("appfirst-dev-number-key")
    log_level: str = "info"

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
