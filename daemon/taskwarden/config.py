"""Settings: a YAML file, overridden by ``TASKWARDEN_*`` environment variables and secret
files (``secrets_dir``, systemd's ``$CREDENTIALS_DIRECTORY``), validated by pydantic.

Nested keys use ``__`` in both: ``TASKWARDEN_SOURCES__DR_PROD__API_KEY`` or a credential
file named ``sources__dr_prod__api_key``.
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from taskwarden.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def parse_duration(value: Any) -> Any:
    """``90s``, ``15m``, ``4h``, ``7d``; plain numbers are seconds."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(f"{value!r} is not a duration such as 90s, 15m, 4h or 7d")
        return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return timedelta(seconds=value)
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DigitalRiverSourceSettings(_Section):
    kind: Literal["digitalriver"] = "digitalriver"
    base_url: str = "https://api.digitalriver.com"
    auth: Literal["basic", "bearer"] = "basic"
    api_key: SecretStr | None = None
    interval: Duration = timedelta(seconds=60)
    overlap: Duration = timedelta(minutes=5)
    initial_lookback: Duration = timedelta(hours=24)
    retention: Duration = timedelta(days=7)
    request_timeout: Duration = timedelta(seconds=30)
    retry_attempts: int = Field(default=5, ge=1, le=20)
    retry_total: Duration = timedelta(seconds=60)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


SourceSettings = DigitalRiverSourceSettings


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(
            f"name {name!r} must be lower-case letters, digits and _ "
            "(it is also part of environment variable and credential file names)"
        )
    return name


SourceName = Annotated[str, AfterValidator(_check_name)]


class StateSettings(_Section):
    path: Path = Path("/var/lib/taskwarden/state.db")


_yaml_path: ContextVar[Path | None] = ContextVar("taskwarden_yaml_path", default=None)
_secret_dirs: ContextVar[tuple[Path, ...]] = ContextVar("taskwarden_secret_dirs", default=())


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TASKWARDEN_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    state: StateSettings = StateSettings()
    sources: dict[SourceName, SourceSettings] = Field(default_factory=dict)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003 - no .env files: explicit config only
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_path = _yaml_path.get()
        secrets = NestedSecretsSettingsSource(
            file_secret_settings,
            secrets_dir=list(_secret_dirs.get()) or None,
            secrets_prefix="",
            secrets_nested_delimiter="__",
            secrets_dir_missing="ok",
        )
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, secrets]
        if yaml_path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_path))
        return tuple(sources)


def secret_dirs(explicit: Path | None = None) -> list[Path]:
    dirs = [explicit] if explicit else []
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials:
        dirs.append(Path(credentials))
    return [d for d in dirs if d.is_dir()]


def load_settings(path: Path | str | None, *, secrets_dir: Path | None = None) -> Settings:
    """Load and validate; every problem is reported at once in a `ConfigError`."""
    yaml_path = Path(path) if path is not None else None
    if yaml_path is not None and not yaml_path.is_file():
        raise ConfigError(f"configuration file {yaml_path} does not exist")
    token = _yaml_path.set(yaml_path)
    dirs_token = _secret_dirs.set(tuple(secret_dirs(secrets_dir)))
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, yaml_path)) from exc
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read configuration {yaml_path}: {exc}") from exc
    finally:
        _yaml_path.reset(token)
        _secret_dirs.reset(dirs_token)


def format_validation_error(exc: ValidationError, path: Path | None) -> str:
    where = f" in {path}" if path else ""
    lines = [f"{exc.error_count()} problem(s) in the configuration{where}:"]
    for error in exc.errors():
        location = ".".join(str(p) for p in error["loc"]) or "(top level)"
        lines.append(f"  {location}: {error['msg']}")
    return "\n".join(lines)
