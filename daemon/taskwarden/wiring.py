"""Builds the runtime objects (HTTP client, sources, state) from settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from taskwarden.errors import ConfigError
from taskwarden.logs import register_secret
from taskwarden.poller import PollSettings
from taskwarden.sources.digitalriver import DigitalRiverClient, DigitalRiverSource, make_auth
from taskwarden.sources.http import RetryPolicy

if TYPE_CHECKING:
    from contextlib import AsyncExitStack

    from taskwarden.config import Settings, SourceSettings
    from taskwarden.sources.base import Source


@dataclass(frozen=True, slots=True)
class ConfiguredSource:
    source: Source
    poll: PollSettings
    interval: float


def register_settings_secrets(settings: Settings) -> None:
    for source in settings.sources.values():
        if source.api_key is not None:
            register_secret(source.api_key.get_secret_value())


def build_source(name: str, config: SourceSettings, http: httpx.AsyncClient) -> ConfiguredSource:
    if config.api_key is None:
        raise ConfigError(
            f"source '{name}' has no API key: set TASKWARDEN_SOURCES__{name.upper()}__API_KEY "
            f"or provide the credential file sources__{name}__api_key"
        )
    retry = RetryPolicy(
        attempts=config.retry_attempts, total_timeout=config.retry_total.total_seconds()
    )
    client = DigitalRiverClient(
        http,
        base_url=config.base_url,
        auth=make_auth(config.auth, config.api_key.get_secret_value()),
        source_name=name,
        retry=retry,
    )
    poll = PollSettings(
        overlap=config.overlap,
        initial_lookback=config.initial_lookback,
        retention=config.retention,
    )
    return ConfiguredSource(DigitalRiverSource(client), poll, config.interval.total_seconds())


async def open_http(stack: AsyncExitStack, settings: Settings) -> httpx.AsyncClient:
    """The one HTTP client every source shares (connection pool, timeouts)."""
    timeout = max(
        (s.request_timeout.total_seconds() for s in settings.sources.values()), default=30
    )
    return await stack.enter_async_context(
        httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            headers={"User-Agent": "taskwarden", "Accept": "application/json"},
        )
    )


def build_sources(settings: Settings, http: httpx.AsyncClient) -> list[ConfiguredSource]:
    if not settings.sources:
        raise ConfigError("the configuration defines no sources")
    return [build_source(name, config, http) for name, config in settings.sources.items()]
