"""Settings: a YAML file, overridden by ``TASKWARDEN_*`` environment variables and secret
files (``secrets_dir``, systemd's ``$CREDENTIALS_DIRECTORY``), validated by pydantic.

Nested keys use ``__`` in both: ``TASKWARDEN_SOURCES__DR_PROD__API_KEY`` or a credential
file named ``sources__dr_prod__api_key``.
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from taskwarden.errors import ConfigError
from taskwarden.matchers import parse_all

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


def _check_http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value.rstrip("/")


HttpUrl = Annotated[str, AfterValidator(_check_http_url)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


MIN_CYCLE_DEADLINE = timedelta(seconds=30)


class _PolledSource(_Section):
    """What every source has: its schedule, its checkpoint overlap, retries, the bounds on
    what polling it may cost, and labels."""

    interval: Duration = timedelta(seconds=60)
    overlap: Duration = timedelta(minutes=5)
    initial_lookback: Duration = timedelta(hours=24)
    retention: Duration = timedelta(days=7)
    request_timeout: Duration = timedelta(seconds=30)
    """Hard bound on one request attempt, connect to last body byte."""
    retry_attempts: int = Field(default=5, ge=1, le=20)
    retry_total: Duration = timedelta(seconds=60)
    """Hard bound on one request with its retries, Retry-After waits included."""
    cycle_deadline: Duration | None = None
    """Hard bound on one poll cycle; default 80 % of the interval, at least 30 s."""
    max_pages_per_cycle: int = Field(default=2_000, ge=1, le=100_000)
    """Listing pages one cycle may read (memory and calls are bounded by it)."""
    max_response_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    """Largest answer accepted, decompressed."""
    max_json_depth: int = Field(default=32, ge=4, le=1000)
    labels: dict[str, str] = Field(default_factory=dict)
    """Free labels on every alert from this source (``env: prod``), for matchers."""

    @property
    def deadline(self) -> timedelta:
        if self.cycle_deadline is not None:
            return self.cycle_deadline
        return max(self.interval * 0.8, MIN_CYCLE_DEADLINE)


class DigitalRiverSourceSettings(_PolledSource):
    kind: Literal["digitalriver"] = "digitalriver"
    base_url: HttpUrl = "https://api.digitalriver.com"
    auth: Literal["basic", "bearer"] = "basic"
    api_key: SecretStr | None = None


class ElasticPathSourceSettings(_PolledSource):
    kind: Literal["elasticpath"]
    base_url: HttpUrl = "https://useast.api.elasticpath.com"
    client_id: str | None = None
    client_secret: SecretStr | None = None
    page_limit: int = Field(default=100, ge=1, le=100)


SOURCE_KINDS = ("digitalriver", "elasticpath")


def _source_kind(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("kind", "digitalriver"))
    return str(getattr(value, "kind", "digitalriver"))


SourceSettings = Annotated[
    Annotated[DigitalRiverSourceSettings, Tag("digitalriver")]
    | Annotated[ElasticPathSourceSettings, Tag("elasticpath")],
    Discriminator(_source_kind),
]


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


# --- receivers ------------------------------------------------------------------------------


class SlackSettings(_Section):
    webhook_url: SecretStr | None = None
    token: SecretStr | None = None
    """A bot token (``xoxb-…``): ``chat.postMessage``, follow-ups in threads."""
    channel: str | None = None
    base_url: str | None = None
    """Slack Web API base (``https://slack.com/api/``); tests point it at loopback."""
    timeout: Duration = timedelta(seconds=10)
    min_interval: Duration = timedelta(seconds=1)
    """Slack allows about one message per second per channel."""

    @model_validator(mode="after")
    def _one_mode(self) -> SlackSettings:
        if (self.webhook_url is None) == (self.token is None):
            raise ValueError("set exactly one of webhook_url and token")
        if self.token is not None and not self.channel:
            raise ValueError("a bot token needs a channel")
        return self


class SmtpSettings(_Section):
    host: str
    port: int = Field(default=587, ge=1, le=65535)
    tls: Literal["starttls", "implicit", "none"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    timeout: Duration = timedelta(seconds=30)
    ca_file: Path | None = None
    """PEM file of a private CA that signed the server's certificate (default: system CAs)."""


class EmailSettings(_Section):
    to: list[str] = Field(min_length=1)
    sender: str = Field(alias="from")
    smtp: SmtpSettings

    @field_validator("to", "sender")
    @classmethod
    def _addresses(cls, value: Any) -> Any:
        values = value if isinstance(value, list) else [value]
        for address in values:
            if "@" not in address or any(c in address for c in "\r\n,;"):
                raise ValueError(f"{address!r} is not a single e-mail address")
        return value


class ReceiverSettings(_Section):
    slack: SlackSettings | None = None
    email: EmailSettings | None = None
    console: bool = False

    @model_validator(mode="after")
    def _exactly_one(self) -> ReceiverSettings:
        if sum([self.slack is not None, self.email is not None, self.console]) != 1:
            raise ValueError("a receiver is exactly one of slack, email or console: true")
        return self


def _check_matchers(value: list[str]) -> list[str]:
    parse_all(value)
    return value


Matchers = Annotated[list[str], AfterValidator(_check_matchers)]


class RouteSettings(_Section):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    receiver: str | None = None
    matchers: Matchers = Field(default_factory=list)
    group_by: list[str] | None = None
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None
    send_resolved: bool | None = None
    continue_matching: bool = Field(default=False, alias="continue")
    routes: list[RouteSettings] = Field(default_factory=list)

    def receivers(self) -> list[str]:
        own = [self.receiver] if self.receiver else []
        return own + [r for child in self.routes for r in child.receivers()]


class SilenceSettings(_Section):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    matchers: Matchers = Field(min_length=1)
    ends: datetime
    starts: datetime | None = None
    comment: str = ""
    created_by: str = "config"


class HealthConfig(_Section):
    labels: dict[str, str] = Field(default_factory=lambda: {"team": "ops"})
    unreachable_after: Duration = timedelta(minutes=15)


class DaemonSettings(_Section):
    health_bind: str = Field(default="127.0.0.1:9464", pattern=r"^\[?[^\]]*\]?:\d+$")
    """Where /healthz, /readyz and /metrics listen (host:port; loopback by default)."""
    readiness_factor: float = Field(default=3.0, ge=1.0)
    """A source is unready when its last successful poll is older than this × its interval."""
    jitter: float = Field(default=0.1, ge=0.0, le=0.5)
    """Random spread of poll times, as a share of the interval."""
    deliver_interval: Duration = timedelta(seconds=2)
    shutdown_grace: Duration = timedelta(seconds=20)
    """On SIGTERM: finish the current cycle and flush the outbox within this time."""


class NotificationSettings(_Section):
    fallback_receiver: str | list[str] | None = None
    """Told when a notification is given up (bypassing the routing tree): one receiver,
    or several in order of preference; the first that is not the failing one is told."""
    max_age: Duration = timedelta(hours=24)
    backoff_initial: Duration = timedelta(seconds=5)
    backoff_max: Duration = timedelta(minutes=10)
    max_details_per_cycle: int = Field(default=20, ge=0)
    """Failed tasks whose error details are fetched per cycle; a storm is summarised."""

    @property
    def fallbacks(self) -> tuple[str, ...]:
        if self.fallback_receiver is None:
            return ()
        if isinstance(self.fallback_receiver, str):
            return (self.fallback_receiver,)
        return tuple(self.fallback_receiver)


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
    teams: list[str] = Field(default_factory=list)
    """Team rule files, globs relative to the configuration file (``teams/*.yaml``)."""
    receivers: dict[SourceName, ReceiverSettings] = Field(default_factory=dict)
    route: RouteSettings | None = None
    silences: list[SilenceSettings] = Field(default_factory=list)
    health: HealthConfig = HealthConfig()
    notifications: NotificationSettings = NotificationSettings()
    daemon: DaemonSettings = DaemonSettings()

    @model_validator(mode="after")
    def _routes_name_receivers(self) -> Settings:
        known = set(self.receivers)
        routed = self.route.receivers() if self.route is not None else []
        fallbacks = self.notifications.fallbacks
        unknown = sorted({r for r in [*routed, *fallbacks] if r not in known})
        if unknown:
            raise ValueError(
                f"unknown receiver(s) {', '.join(unknown)}; "
                f"defined: {', '.join(sorted(known)) or 'none'}"
            )
        if self.route is not None and self.route.receiver is None:
            raise ValueError("route: the root route needs a receiver (the default)")
        if self.receivers and self.route is None:
            raise ValueError("receivers are defined but no route sends anything to them")
        alone = [r for r in dict.fromkeys(routed) if set(fallbacks) <= {r}] if fallbacks else []
        if alone:
            raise ValueError(
                f"notifications.fallback_receiver: {alone[0]!r} is its own only fallback; when "
                "it fails nobody would be told. List a second receiver after it, e.g. "
                f"fallback_receiver: [{alone[0]}, {_other(known, alone[0])}]"
            )
        return self

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


def _other(names: set[str], besides: str) -> str:
    return next((n for n in sorted(names) if n != besides), "ops_mail")


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
    tree = _yaml_tree(path)
    for error in exc.errors():
        loc = list(error["loc"])
        if len(loc) > 2 and loc[0] == "sources" and loc[2] in SOURCE_KINDS:
            del loc[2]  # the union's tag: the source's kind is already in the file
        location = ".".join(str(p) for p in loc) or "(top level)"
        line = _line_of(tree, loc)
        at = f" (line {line})" if line is not None else ""
        lines.append(f"  {location}{at}: {error['msg']}")
    return "\n".join(lines)


def _yaml_tree(path: Path | None) -> yaml.Node | None:
    if path is None:
        return None
    try:
        return yaml.compose(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None


def _line_of(node: yaml.Node | None, loc: list[int | str]) -> int | None:
    """The YAML line of the deepest key along ``loc`` that the file has (1-based)."""
    line = None
    for step in loc:
        if isinstance(node, yaml.MappingNode):
            found = next(((k, v) for k, v in node.value if k.value == str(step)), None)
            if found is None:
                break
            line = found[0].start_mark.line + 1
            node = found[1]
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value)
        ):
            node = node.value[step]
            line = node.start_mark.line + 1
        else:
            break
    return line
