"""Settings: a YAML file, overridden by ``TASKWARDEN_*`` environment variables and secret
files (``secrets_dir``, systemd's ``$CREDENTIALS_DIRECTORY``), validated by pydantic.

Nested keys use ``__`` in both: ``TASKWARDEN_SOURCES__DR_PROD__API_KEY`` or a credential
file named ``sources__dr_prod__api_key``.
"""

from __future__ import annotations

import os
import re
import ssl
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

import structlog
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
    EnvSettingsSource,
    InitSettingsSource,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.sources.utils import parse_env_vars

from taskwarden.errors import ConfigError
from taskwarden.links import ConsoleLink
from taskwarden.matchers import parse_all
from taskwarden.notify.templating import check_template
from taskwarden.yamlfile import (
    YamlDocument,
    annotations_at,
    did_you_mean,
    explain,
    fields_at,
    load_yaml,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

log = structlog.get_logger(__name__)

_DURATION = re.compile(r"^\s*(?:\d+(?:\.\d+)?\s*(?:ms|s|m|h|d|w)\s*)+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def parse_duration(value: Any) -> Any:
    """``90s``, ``15m``, ``4h``, ``7d``; plain numbers are seconds."""
    if isinstance(value, str):
        if _DURATION.match(value) is None:
            raise ValueError(f"{value!r} is not a duration such as 90s, 15m, 4h, 7d or 1h30m")
        parts = _DURATION_PART.findall(value)
        return timedelta(seconds=sum(float(n) * _UNITS[unit] for n, unit in parts))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return timedelta(seconds=value)
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def _https_or_loopback(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return True
    return parts.scheme == "http" and (parts.hostname or "") in _LOOPBACK_HOSTS


def _secret_https_url(value: SecretStr) -> SecretStr:
    if not _https_or_loopback(value.get_secret_value()):
        raise ValueError(
            "must be an https:// URL (plain http:// only to this host); the value is a "
            "secret and is not shown"
        )
    return value


SecretUrl = Annotated[SecretStr, AfterValidator(_secret_https_url)]
"""A URL that is a secret (webhooks, ping URLs carry their token): https, or http to
this host only."""


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
    max_pages_per_cycle: int = Field(default=3_000, ge=1, le=100_000)
    """Listing pages one cycle may read (memory and calls are bounded by it)."""
    max_response_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    """Largest answer accepted, decompressed."""
    max_json_depth: int = Field(default=32, ge=4, le=1000)
    labels: dict[str, str] = Field(default_factory=dict)
    """Free labels on every alert from this source (``env: prod``), for matchers."""
    console_url: str | None = None
    """The vendor console page of a task, as a pattern with {task_id}, {source},
    {product_id}, {erid} (URL-quoted): the link alerts give; the API URL otherwise."""

    @field_validator("console_url")
    @classmethod
    def _console_pattern(cls, value: str | None) -> str | None:
        if value is not None:
            ConsoleLink.compile(value)
        return value

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
    """The embedded SQLite state (one replica): used unless ``url`` is set."""
    url: str | None = None
    """``postgresql://user@host:5432/db``: the shared state of several replicas. The
    password is a secret (``state.password``), never part of the URL."""
    password: SecretStr | None = None
    migrate: bool = False
    """Apply schema migrations to the shared database at start (one replica, told so);
    otherwise ``taskwarden migrate`` does."""
    lease_ttl: Duration = timedelta(seconds=15)
    """How long a replica's claim on a source or receiver lasts without renewal: a dead
    replica's work is taken over within two of these."""
    replica: str | None = None
    """This replica's name in ``taskwarden state`` (default: host name and process id)."""

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parsed = urlsplit(value)
        if parsed.scheme not in {"postgresql", "postgres"}:
            raise ValueError("must be a postgresql:// URL")
        if parsed.password:
            raise ValueError(
                "must not contain a password: give it as the secret state.password "
                "(TASKWARDEN_STATE__PASSWORD or a credential file state__password); the "
                "value is a secret and is not shown"
            )
        return value

    @field_validator("lease_ttl")
    @classmethod
    def _sane_ttl(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=3):
            raise ValueError("must be at least 3s (claims are renewed every third of it)")
        return value


# --- receivers ------------------------------------------------------------------------------


class _Templated(_Section):
    title: str | None = None
    """A Jinja2 template for the message's title (Slack header, e-mail subject, card
    title); default: the built-in headline."""
    text: str | None = None
    """A Jinja2 template for the message's body; default: the built-in rendering."""

    @field_validator("title", "text")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        return check_template(value) if value is not None else None


class SlackSettings(_Templated):
    webhook_url: SecretUrl | None = None
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
            raise ValueError("set exactly one of webhook_url (a webhook) and token (a bot)")
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

    @field_validator("ca_file")
    @classmethod
    def _usable_ca(cls, value: Path | None) -> Path | None:
        if value is None:
            return value
        if not value.is_file():
            raise ValueError(f"no such file: {value}")
        try:
            ssl.create_default_context(cafile=str(value))
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ValueError(f"{value} is not a usable PEM CA file: {exc}") from None
        return value


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class EmailSettings(_Templated):
    to: Annotated[list[str], BeforeValidator(_one_or_many)] = Field(min_length=1)
    """One address or a list (as Alertmanager users write it)."""
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


_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_RESERVED_HEADERS = frozenset({"authorization", "content-type", "content-length", "host"})


class WebhookSettings(_Section):
    """A POST of the Alertmanager webhook payload (version 4) to ``url``."""

    url: SecretUrl
    """May carry a token in its path or query: a secret (``receivers__<name>__webhook__url``)."""
    bearer_token: SecretStr | None = None
    hmac_secret: SecretStr | None = None
    """Signs each body: ``X-Taskwarden-Signature: sha256=<HMAC-SHA256 hex>``."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra, non-secret headers (secrets go in ``bearer_token`` or ``url``)."""
    max_alerts: int = Field(default=0, ge=0)
    """At most this many alerts per message (0: all); the rest are counted in
    ``truncatedAlerts``."""
    external_url: str = ""
    """``externalURL`` of the payload: where people reach this taskwarden."""
    timeout: Duration = timedelta(seconds=10)
    min_interval: Duration = timedelta(0)

    @field_validator("headers")
    @classmethod
    def _plain_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, content in value.items():
            if not _HEADER_NAME.match(name) or name.lower() in _RESERVED_HEADERS:
                raise ValueError(
                    f"header {name!r} cannot be set here (letters, digits and -; "
                    "Authorization comes from bearer_token)"
                )
            if any(c in content for c in "\r\n"):
                raise ValueError(f"header {name!r} has a line break in its value")
        return value


class PagerDutySettings(_Section):
    """PagerDuty Events API v2: a trigger per firing alert, a resolve per resolved one."""

    routing_key: SecretStr
    """The integration key of the service (``receivers__<name>__pagerduty__routing_key``)."""
    url: HttpUrl = "https://events.pagerduty.com/v2/enqueue"
    """The Events API endpoint (EU accounts: ``https://events.eu.pagerduty.com/v2/enqueue``)."""
    client_url: str = ""
    """Shown as the event's client link: where people reach this taskwarden."""
    timeout: Duration = timedelta(seconds=10)
    min_interval: Duration = timedelta(0)

    @field_validator("url")
    @classmethod
    def _https(cls, value: str) -> str:
        if not _https_or_loopback(value):
            raise ValueError("must be an https:// URL (plain http:// only to this host)")
        return value


class AlertmanagerSettings(_Section):
    """Push alerts into an existing Alertmanager (``POST /api/v2/alerts``)."""

    url: HttpUrl
    """Its base URL (``http://alertmanager.monitoring:9093``)."""
    bearer_token: SecretStr | None = None
    firing_ttl: Duration = timedelta(hours=6)
    """A firing alert's ``endsAt``; routes to this receiver must repeat more often."""
    generator_url: str = ""
    """``generatorURL`` of alerts without a task link: where people reach this taskwarden."""
    timeout: Duration = timedelta(seconds=10)
    min_interval: Duration = timedelta(0)


class TeamsSettings(_Templated):
    """Microsoft Teams: a Workflows webhook ("Post to a channel when a webhook request is
    received") that posts an Adaptive Card."""

    url: SecretUrl
    """The workflow's URL (it carries its signature: ``receivers__<name>__teams__url``)."""
    timeout: Duration = timedelta(seconds=10)
    min_interval: Duration = timedelta(seconds=1)


class ReceiverSettings(_Section):
    slack: SlackSettings | None = None
    email: EmailSettings | None = None
    webhook: WebhookSettings | None = None
    pagerduty: PagerDutySettings | None = None
    alertmanager: AlertmanagerSettings | None = None
    teams: TeamsSettings | None = None
    console: bool = False

    @model_validator(mode="after")
    def _exactly_one(self) -> ReceiverSettings:
        kinds = [self.slack, self.email, self.webhook, self.pagerduty, self.alertmanager]
        if sum([*(k is not None for k in [*kinds, self.teams]), self.console]) != 1:
            raise ValueError(
                "a receiver is exactly one of slack, email, webhook, pagerduty, alertmanager, "
                "teams or console: true"
            )
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

    def named_receivers(self, loc: list[int | str]) -> list[tuple[list[int | str], str]]:
        """Every receiver the tree names, with where (``route.routes.1.receiver``)."""
        own = [([*loc, "receiver"], self.receiver)] if self.receiver else []
        return own + [
            found
            for index, child in enumerate(self.routes)
            for found in child.named_receivers([*loc, "routes", index])
        ]


def _matching(pattern: str, what: str) -> AfterValidator:
    """A string check that says what is expected, not the regular expression behind it."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if compiled.fullmatch(value) is None:
            raise ValueError(f"{value!r} is not {what}")
        return value

    return AfterValidator(check)


class SilenceSettings(_Section):
    id: Annotated[str, _matching(r"[A-Za-z0-9_.-]+", "an id of letters, digits, '_', '.', '-'")]
    matchers: Matchers = Field(min_length=1)
    ends: datetime
    starts: datetime | None = None
    comment: str = ""
    created_by: str = "config"


class HealthConfig(_Section):
    labels: dict[str, str] = Field(default_factory=lambda: {"team": "ops"})
    unreachable_after: Duration = timedelta(minutes=15)


class DaemonSettings(_Section):
    health_bind: Annotated[
        str, _matching(r"\[?[^\]]*\]?:\d+", "host:port, such as 127.0.0.1:9464 or 0.0.0.0:9464")
    ] = "127.0.0.1:9464"
    """Where /healthz, /readyz and /metrics listen (host:port; loopback by default)."""
    readiness_factor: float = Field(default=3.0, ge=1.0)
    """A source is unready when its last successful poll is older than this × its interval."""
    jitter: float = Field(default=0.1, ge=0.0, le=0.5)
    """Random spread of poll times, as a share of the interval."""
    deliver_interval: Duration = timedelta(seconds=2)
    shutdown_grace: Duration = timedelta(seconds=20)
    """On SIGTERM: finish the current cycle and flush the outbox within this time."""
    watch_config: Duration | None = timedelta(seconds=30)
    """How often to look for changes to the configuration and team files, and reload as on
    SIGHUP when their contents changed (a Kubernetes ConfigMap edit); null: SIGHUP only."""
    api_token: SecretStr | None = None
    """Bearer token for the API's writes (adding and expiring silences); none: the API
    is read-only. A secret: TASKWARDEN_DAEMON__API_TOKEN / daemon__api_token."""


class HeartbeatSettings(_Section):
    """A dead man's switch: pinged while every source polls fine, so that an outside
    service (healthchecks.io, Dead Man's Snitch, Cronitor) pages when taskwarden goes quiet
    — crashed, hung, its host gone — which nothing inside the process can report."""

    url: SecretUrl
    """The ping URL (a secret: it identifies your check). From the environment or a
    credential file: TASKWARDEN_HEARTBEAT__URL / heartbeat__url."""
    interval: Duration = timedelta(minutes=1)
    method: Literal["GET", "POST"] = "GET"
    timeout: Duration = timedelta(seconds=10)


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
    heartbeat: HeartbeatSettings | None = None
    notifications: NotificationSettings = NotificationSettings()
    daemon: DaemonSettings = DaemonSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003 - no .env files: explicit config only
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        loading = _loading.get() or _Loading()
        secrets = NestedSecretsSettingsSource(
            file_secret_settings,
            secrets_dir=list(loading.secret_dirs) or None,
            secrets_prefix="",
            secrets_nested_delimiter="__",
            secrets_dir_missing="ok",
        )
        environment = (
            _EnvironmentOf(settings_cls, loading.environ)
            if loading.environ is not None
            else env_settings
        )
        return (
            init_settings,
            _DeclaredOnly(settings_cls, environment, loading),
            _DeclaredOnly(settings_cls, secrets, loading),
            InitSettingsSource(settings_cls, init_kwargs=loading.yaml_data),
        )


# --- loading: the YAML file, then secrets and environment that fill in what it declares ----

COLLECTIONS = ("sources", "receivers")
"""Keyed sections that only the YAML file may declare entries of."""
ENV_PREFIX = "TASKWARDEN_"
CLI_VARIABLES = frozenset({"TASKWARDEN_CONFIG"})
"""Variables the command line reads itself (``-c`` from ``$TASKWARDEN_CONFIG``)."""


@dataclass
class _Loading:
    """What one `load_config` call knows while pydantic-settings gathers its sources."""

    yaml_data: dict[str, Any] = field(default_factory=dict)
    secret_dirs: tuple[Path, ...] = ()
    declared: dict[str, set[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    environ: Mapping[str, str] | None = None
    """The environment to read (None: the process's own)."""
    ignored: frozenset[str] = frozenset()
    """Sections not read at all (`STATE_ONLY`), from the file, the environment or secrets."""


_loading: ContextVar[_Loading | None] = ContextVar("taskwarden_loading", default=None)


class _EnvironmentOf(EnvSettingsSource):
    """The ``TASKWARDEN_*`` variables of a given environment rather than the process's
    (the demo hands its daemon credentials without touching ``os.environ``)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # pydantic-settings' own hook (its .env source overrides it the same way).
        return parse_env_vars(
            self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


class _DeclaredOnly(PydanticBaseSettingsSource):
    """Environment variables or credential files, minus entries of sources and receivers
    the YAML does not declare: a leftover secret never creates a source (polling the
    production URL by default) or breaks a configuration with a receiver it lacks."""

    def __init__(
        self, settings_cls: type[BaseSettings], inner: PydanticBaseSettingsSource, loading: _Loading
    ) -> None:
        super().__init__(settings_cls)
        self._inner = inner
        self._loading = loading

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # noqa: ARG002 - not used: __call__ is
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        data = self._inner()
        for key in self._loading.ignored:
            data.pop(key, None)
        for key in COLLECTIONS:
            entries = data.get(key)
            if not isinstance(entries, dict):
                continue
            for name in [n for n in entries if n not in self._loading.declared.get(key, set())]:
                del entries[name]
            if not entries:
                del data[key]
        return data


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    settings: Settings
    path: Path | None
    warnings: tuple[str, ...] = ()
    document: YamlDocument | None = None


def _other(names: set[str], besides: str) -> str:
    return next((n for n in sorted(names) if n != besides), "ops_mail")


def secret_dirs(
    explicit: Path | None = None, environ: Mapping[str, str] | None = None
) -> list[Path]:
    dirs = [explicit] if explicit else []
    credentials = (os.environ if environ is None else environ).get("CREDENTIALS_DIRECTORY")
    if credentials:
        dirs.append(Path(credentials))
    return [d for d in dirs if d.is_dir()]


def config_loader(
    path: Path, *, environ: Mapping[str, str] | None = None
) -> Callable[[], LoadedConfig]:
    """What the daemon calls at start and at every reload."""
    return lambda: load_config(path, environ=environ)


STATE_ONLY = frozenset({"receivers", "route", "heartbeat"})
"""What commands that only read or annotate the state (``state``, ``alerts``, ``silence``)
do not read: they work beside the daemon without the receivers' secrets."""


def load_settings(
    path: Path | str | None, *, secrets_dir: Path | None = None, state_only: bool = False
) -> Settings:
    """`load_config`, logging its warnings; the settings. ``state_only``: without the
    `STATE_ONLY` sections (no receiver, route or heartbeat, so none of their secrets)."""
    loaded = load_config(
        path, secrets_dir=secrets_dir, ignore=STATE_ONLY if state_only else frozenset()
    )
    for warning in loaded.warnings:
        log.warning("config.warning", warning=warning)
    return loaded.settings


def load_config(
    path: Path | str | None,
    *,
    secrets_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
    ignore: frozenset[str] = frozenset(),
    receivers_as_console: bool = False,
) -> LoadedConfig:
    """Load and validate; every problem is reported at once in a `ConfigError`, each with
    its file and line, or the variable or credential file it came from. Sections in
    ``ignore`` are not read (nor checked). ``receivers_as_console`` (a dry run, which
    sends nothing): every receiver is a console of the same name, so routing is checked
    and shown without any receiver's secrets; the heartbeat is not read."""
    environ = os.environ if environ is None else environ
    yaml_path = Path(path) if path is not None else None
    document: YamlDocument | None = None
    data: dict[str, Any] = {}
    if yaml_path is not None:
        if not yaml_path.is_file():
            raise ConfigError(f"configuration file {yaml_path} does not exist")
        document = load_yaml(yaml_path)
        if document.data is not None and not isinstance(document.data, dict):
            raise ConfigError(f"{yaml_path}:1: the configuration must be a mapping of sections")
        data = {k: v for k, v in (document.data or {}).items() if k not in ignore}
    if receivers_as_console:
        data.pop("heartbeat", None)
        if isinstance(data.get("receivers"), dict):
            data["receivers"] = {name: {"console": True} for name in data["receivers"]}
    stand_ins = frozenset({"receivers", "heartbeat"}) if receivers_as_console else frozenset()
    dirs = tuple(secret_dirs(secrets_dir, environ))
    loading = _Loading(
        yaml_data=data,
        secret_dirs=dirs,
        environ=None if environ is os.environ else environ,
        ignored=ignore | stand_ins,
        declared={
            key: set(data[key]) if isinstance(data.get(key), dict) else set() for key in COLLECTIONS
        },
    )
    problems, origins = _check_overrides(environ, dirs, data, loading)
    token = _loading.set(loading)
    try:
        settings = Settings()
    except ValidationError as exc:
        problems.extend(_validation_problems(exc, document, origins))
        raise ConfigError(_report(problems, yaml_path)) from exc
    finally:
        _loading.reset(token)
    if "receivers" not in ignore:
        problems.extend(_cross_problems(settings, document))
    if problems:
        raise ConfigError(_report(problems, yaml_path))
    return LoadedConfig(settings, yaml_path, tuple(loading.warnings), document)


def _report(problems: list[str], path: Path | None) -> str:
    where = f" in {path}" if path else ""
    return "\n".join([f"{len(problems)} problem(s) in the configuration{where}:", *problems])


def _check_overrides(
    environ: Mapping[str, str], dirs: tuple[Path, ...], data: dict[str, Any], loading: _Loading
) -> tuple[list[str], dict[tuple[str, ...], str]]:
    """Every ``TASKWARDEN_*`` variable and credential file must name a setting; those for a
    source or receiver the YAML does not declare are ignored, with a warning."""
    problems: list[str] = []
    origins: dict[tuple[str, ...], str] = {}
    candidates = [
        (f"environment variable {name}", name[len(ENV_PREFIX) :])
        for name in sorted(environ)
        if name.upper().startswith(ENV_PREFIX) and name.upper() not in CLI_VARIABLES
    ]
    for directory in dirs:
        candidates.extend(
            (f"credential file {entry.name}", entry.name)
            for entry in sorted(directory.iterdir())
            if entry.is_file() and not entry.name.startswith(".")
        )
    for origin, key in candidates:
        segments = tuple(part.lower() for part in key.split("__"))
        if segments[0] in loading.ignored:
            continue
        problem = _setting_path_problem(segments, data)
        if problem is None:
            origins[segments] = origin
            if segments[0] in COLLECTIONS and segments[1] not in loading.declared[segments[0]]:
                kind = segments[0][:-1]
                loading.warnings.append(
                    f"{origin} is ignored: no {kind} {segments[1]!r} is declared in the "
                    f"configuration file (secrets fill in what it declares, never add "
                    f"{segments[0]})"
                )
        elif origin.startswith("environment"):
            problems.append(f"  {origin}: {problem}")
        # Other files in a credentials directory (systemd puts what it is told to) are not ours.
    return problems, origins


def _entry_model(collection: str, name: str, data: dict[str, Any]) -> type[BaseModel]:
    """The model of one declared source (by its ``kind``) or receiver."""
    if collection == "receivers":
        return ReceiverSettings
    entries = data.get(collection)
    entry = entries.get(name) if isinstance(entries, dict) else None
    kind = entry.get("kind", "digitalriver") if isinstance(entry, dict) else "digitalriver"
    return ElasticPathSourceSettings if kind == "elasticpath" else DigitalRiverSourceSettings


def _setting_path_problem(segments: tuple[str, ...], data: dict[str, Any]) -> str | None:
    """None when ``segments`` name a setting, else what is wrong (with a did-you-mean)."""
    model: type[BaseModel] | None = Settings
    depth = 0
    while depth < len(segments):
        segment = segments[depth]
        where = ".".join(segments[:depth]) or "the configuration"
        if model is None:
            return f"{where} has no sub-keys"
        fields = _field_names(model)
        if segment not in fields:
            return f"{where} has no setting {segment!r}{did_you_mean(segment, fields)}"
        if depth == 0 and segment in COLLECTIONS:
            if len(segments) < 3:
                return f"name a setting of one of the {segment}: {segment.upper()}__NAME__KEY"
            model = _entry_model(segment, segments[1], data)
            depth += 2
            continue
        model = _model_of(fields[segment])
        depth += 1
    return None


def _field_names(model: type[BaseModel]) -> dict[str, Any]:
    names: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        names[name] = info.annotation
        if isinstance(info.alias, str):
            names[info.alias] = info.annotation
    return names


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds (through Optional / Annotated), if it holds one."""
    candidates = [annotation]
    while candidates:
        current = candidates.pop()
        if isinstance(current, type) and issubclass(current, BaseModel):
            return current
        candidates.extend(get_args(current))
    return None


def _validation_problems(
    exc: ValidationError, document: YamlDocument | None, origins: Mapping[tuple[str, ...], str]
) -> list[str]:
    problems = []
    for error in exc.errors():
        loc = list(error["loc"])
        if len(loc) > 2 and loc[0] == "sources" and loc[2] in SOURCE_KINDS:
            del loc[2]  # the union's tag: the source's kind is already in the file
        location = ".".join(str(p) for p in loc) or "(top level)"
        key = tuple(str(p).lower() for p in loc)
        origin = next((o for path, o in origins.items() if key[: len(path)] == path), None)
        line = document.line_of(loc) if document is not None else None
        if origin is not None:
            at = f" (from {origin})"
        else:
            at = f" (line {line})" if line is not None else ""
        said = explain(error, Settings)
        problems.append(f"  {location}{at}: {said}{_secret_hint(loc, error)}")
    return problems


def _is_secret(annotations: list[Any]) -> bool:
    candidates = list(annotations)
    while candidates:
        current = candidates.pop()
        if current is SecretStr:
            return True
        candidates.extend(get_args(current))
    return False


def _secret_hint(loc: Sequence[int | str], error: Any) -> str:
    """A missing secret names where it can come from: the variable and the credential file."""
    if error.get("type") == "missing":
        loc, names = loc[:-1], [str(loc[-1])] if loc else []
    else:
        said = {
            n: m.start()
            for n in fields_at(Settings, loc)
            if (m := re.search(rf"\b{n}\b", error["msg"]))
        }
        names = sorted(said, key=said.__getitem__)  # in the order the message names them
    secrets = [n for n in names if _is_secret(annotations_at(Settings, [*loc, n]))]
    if not secrets:
        return ""
    where = {
        n: f"{ENV_PREFIX}{'__'.join(map(str, [*loc, n])).upper()} or the credential file "
        f"{'__'.join(map(str, [*loc, n]))}"
        for n in secrets
    }
    if len(where) == 1:
        return f" (a secret: give it as {next(iter(where.values()))})"
    return " (secrets: " + "; ".join(f"{n} as {w}" for n, w in where.items()) + ")"


def _cross_problems(settings: Settings, document: YamlDocument | None) -> list[str]:
    """What pydantic cannot see field by field: receivers named in routes and fallbacks."""

    def at(loc: list[int | str]) -> str:
        line = document.line_of(loc) if document is not None else None
        return f" (line {line})" if line is not None else ""

    known = set(settings.receivers)
    problems: list[str] = []
    if settings.route is not None:
        if settings.route.receiver is None:
            problems.append(
                f"  route{at(['route'])}: the root route needs a receiver (the default)"
            )
        for loc, receiver in settings.route.named_receivers(["route"]):
            if receiver not in known:
                defined = ", ".join(sorted(known)) or "none"
                problems.append(
                    f"  {'.'.join(map(str, loc))}{at(loc)}: unknown receiver {receiver!r}"
                    f"{did_you_mean(receiver, known)}; defined: {defined}"
                )
    elif settings.receivers:
        problems.append(
            f"  receivers{at(['receivers'])}: receivers are defined but no route sends "
            "anything to them"
        )
    fallbacks = settings.notifications.fallbacks
    fallback_loc: list[int | str] = ["notifications", "fallback_receiver"]
    problems.extend(
        f"  notifications.fallback_receiver{at(fallback_loc)}: unknown receiver "
        f"{name!r}{did_you_mean(name, known)}"
        for name in fallbacks
        if name not in known
    )
    routed = [r for _, r in settings.route.named_receivers(["route"])] if settings.route else []
    alone = [r for r in dict.fromkeys(routed) if fallbacks and set(fallbacks) <= {r}]
    if alone:
        problems.append(
            f"  notifications.fallback_receiver{at(fallback_loc)}: {alone[0]!r} is its own only "
            "fallback; when it fails nobody would be told. List a second receiver after it, "
            f"e.g. fallback_receiver: [{alone[0]}, {_other(known, alone[0])}]"
        )
    return problems
