"""Builds the runtime objects (HTTP client, sources, state) from settings."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx

from taskwarden.alerting import Alerting
from taskwarden.config import ElasticPathSourceSettings
from taskwarden.errors import ConfigError
from taskwarden.health import HEALTH_ALERT_LABELS, HealthSettings
from taskwarden.links import ConsoleLink
from taskwarden.matchers import parse_all
from taskwarden.notify.alertmanager import AlertmanagerNotifier
from taskwarden.notify.console import ConsoleNotifier
from taskwarden.notify.email import EmailNotifier
from taskwarden.notify.email import templates as email_templates
from taskwarden.notify.pagerduty import PagerDutyNotifier
from taskwarden.notify.slack import SlackBotNotifier, SlackWebhookNotifier
from taskwarden.notify.slack import templates as slack_templates
from taskwarden.notify.teams import TeamsNotifier
from taskwarden.notify.teams import templates as teams_templates
from taskwarden.notify.webhook import WebhookNotifier
from taskwarden.outbox import DeliverySettings, Receiver
from taskwarden.poller import PollSettings
from taskwarden.routing import Route, RouteNode, Silence, compile_routes
from taskwarden.rules import RULE_ALERT_LABELS, TASK_LABELS
from taskwarden.sources.digitalriver import DigitalRiverClient, DigitalRiverSource, make_auth
from taskwarden.sources.elasticpath import ElasticPathClient, ElasticPathSource
from taskwarden.sources.http import CallMeter, ResponseLimits, RetryPolicy
from taskwarden.state import open_state
from taskwarden.teams import read_teams
from taskwarden.timeutil import as_utc
from taskwarden.yamlfile import did_you_mean, load_yaml

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence
    from contextlib import AsyncExitStack
    from datetime import datetime

    from pydantic import SecretStr

    from taskwarden.config import ReceiverSettings, RouteSettings, Settings, SourceSettings
    from taskwarden.delivery import Notifier
    from taskwarden.logs import Redactor
    from taskwarden.matchers import Matcher
    from taskwarden.rules import Team
    from taskwarden.sources.base import Source
    from taskwarden.state import SqliteStateStore
    from taskwarden.state.postgres import PostgresStateStore
    from taskwarden.yamlfile import YamlDocument


def open_configured_state(
    settings: Settings,
    *,
    now: datetime,
    read_only: bool = False,
    snapshot: bool = False,
    lock: bool = True,
    redactor: Redactor | None = None,
    migrate: bool | None = None,
) -> SqliteStateStore | PostgresStateStore:
    """The state the settings name: the shared PostgreSQL database (``state.url``) or the
    SQLite file. On PostgreSQL, ``read_only`` and ``snapshot`` both discard every write
    (the replicas' database is never touched by an inspection or a dry run), and ``lock``
    does not apply (leases share the work)."""
    state = settings.state
    if state.url is None:
        return open_state(
            state.path,
            now=now,
            read_only=read_only,
            snapshot=snapshot,
            lock=lock,
            redactor=redactor,
        )
    from taskwarden.state.postgres import open_postgres

    return open_postgres(
        state.url,
        password=state.password.get_secret_value() if state.password is not None else None,
        redactor=redactor,
        discard_writes=read_only or snapshot,
        apply_migrations=state.migrate if migrate is None else migrate,
    )


@dataclass(frozen=True, slots=True)
class ConfiguredSource:
    source: Source
    poll: PollSettings
    interval: float


def settings_secrets(settings: Settings) -> list[str]:
    """Every secret the configuration holds: what the `Redactor` must never let out."""
    found: list[SecretStr | None] = [
        source.client_secret if isinstance(source, ElasticPathSourceSettings) else source.api_key
        for source in settings.sources.values()
    ]
    for receiver in settings.receivers.values():
        if receiver.slack is not None:
            found += [receiver.slack.token, receiver.slack.webhook_url]
        if receiver.email is not None:
            found.append(receiver.email.smtp.password)
        if receiver.webhook is not None:
            hook = receiver.webhook
            found += [hook.url, hook.bearer_token, hook.hmac_secret]
        if receiver.pagerduty is not None:
            found.append(receiver.pagerduty.routing_key)
        if receiver.alertmanager is not None:
            found.append(receiver.alertmanager.bearer_token)
        if receiver.teams is not None:
            found.append(receiver.teams.url)
    if settings.heartbeat is not None:
        found.append(settings.heartbeat.url)
    found.append(settings.state.password)
    return [secret.get_secret_value() for secret in found if secret is not None]


def _route(config: RouteSettings) -> Route:
    return Route(
        receiver=config.receiver,
        matchers=parse_all(config.matchers),
        group_by=tuple(config.group_by) if config.group_by is not None else None,
        group_wait=config.group_wait,
        group_interval=config.group_interval,
        repeat_interval=config.repeat_interval,
        send_resolved=config.send_resolved,
        continue_matching=config.continue_matching,
        routes=tuple(_route(r) for r in config.routes),
    )


def health_settings(settings: Settings) -> HealthSettings:
    return HealthSettings(
        labels=tuple(sorted(settings.health.labels.items())),
        unreachable_after=settings.health.unreachable_after,
    )


def alert_label_names(settings: Settings, teams: Sequence[Team]) -> frozenset[str]:
    """Every label some alert can carry: what routes, group_by and silences may name."""
    names = set(RULE_ALERT_LABELS | HEALTH_ALERT_LABELS)
    names.update(settings.health.labels)
    for source in settings.sources.values():
        names.update(source.labels)
    for team in teams:
        names.update(k for k, _ in team.labels)
        for rule in team.rules:
            names.update(k for k, _ in rule.labels)
    return frozenset(names)


def task_label_names(settings: Settings) -> frozenset[str]:
    """What team rule matchers can see of a task."""
    return TASK_LABELS | {name for s in settings.sources.values() for name in s.labels}


def team_problems_of_raw(config_path: Path) -> list[str]:
    """The team files' problems when the configuration itself is invalid (so that `check`
    says everything at once): read with the file's own ``teams`` globs and sources' labels
    as written, whatever else is wrong with it."""
    try:
        data = load_yaml(config_path).data
    except ConfigError:
        return []  # the YAML itself is broken: that is the problem already reported
    if not isinstance(data, dict) or not isinstance(data.get("teams"), list):
        return []
    patterns = [p for p in data["teams"] if isinstance(p, str)]
    sources = data.get("sources") if isinstance(data.get("sources"), dict) else {}
    labels = {
        str(name)
        for source in (sources or {}).values()
        if isinstance(source, dict) and isinstance(source.get("labels"), dict)
        for name in source["labels"]
    }
    _, problems = read_teams(patterns, config_path.parent, task_labels=TASK_LABELS | labels)
    return problems


def label_problems(
    settings: Settings, known: frozenset[str], document: YamlDocument | None
) -> list[str]:
    """Matchers and ``group_by`` naming a label no alert carries: they can never match."""

    def check(names: Iterable[str], loc: list[int | str], what: str) -> Iterator[str]:
        line = document.line_of(loc) if document is not None else None
        at = f" (line {line})" if line is not None else ""
        for name in names:
            if name not in known and name != "...":
                yield (
                    f"  {'.'.join(map(str, loc))}{at}: {what} {name!r} is never set on an "
                    f"alert{did_you_mean(name, known)}"
                )

    problems: list[str] = []

    def walk(route: RouteSettings, loc: list[int | str]) -> None:
        problems.extend(
            check((m.name for m in parse_all(route.matchers)), [*loc, "matchers"], "label")
        )
        problems.extend(check(route.group_by or (), [*loc, "group_by"], "group_by label"))
        for index, child in enumerate(route.routes):
            walk(child, [*loc, "routes", index])

    if settings.route is not None:
        walk(settings.route, ["route"])
    for index, silence in enumerate(settings.silences):
        names = (m.name for m in parse_all(silence.matchers))
        problems.extend(check(names, ["silences", index, "matchers"], "label"))
    return problems


def build_alerting(settings: Settings, config_path: Path | None) -> Alerting:
    """Teams' rules (their files are read here), the routing tree and health settings.

    Label names are checked here, where the teams' and sources' own labels are known: a
    route, a group_by or a silence naming a label no alert carries is an error."""
    base = config_path.parent if config_path is not None else Path()
    teams, broken = read_teams(settings.teams, base, task_labels=task_label_names(settings))
    document = load_yaml(config_path) if config_path is not None else None
    # Checked against the team files that loaded, so that every problem is said at once.
    problems = label_problems(settings, alert_label_names(settings, teams), document)
    if problems or broken:
        where = f" in {config_path}" if config_path else ""
        said = [f"{len(problems)} problem(s) in the configuration{where}:", *problems]
        raise ConfigError("\n".join([*broken, *(said if problems else [])]))
    root = _route(settings.route) if settings.route is not None else None
    if root is not None and root.group_by is None:
        root = replace(root, group_by=("team", "rule", "source", "kind"))
    if root is not None and root.receiver is not None:
        _check_alertmanager_repeats(settings, compile_routes(root))
    return Alerting(
        teams=teams,
        route=root,
        health=health_settings(settings),
        source_labels={
            name: tuple(sorted(s.labels.items())) for name, s in settings.sources.items()
        },
        console_links={
            name: ConsoleLink.compile(s.console_url)
            for name, s in settings.sources.items()
            if s.console_url
        },
        max_details=settings.notifications.max_details_per_cycle,
    )


def _check_alertmanager_repeats(settings: Settings, node: RouteNode) -> None:
    """A route to an Alertmanager must repeat before the alerts it posted lapse."""
    config = settings.receivers.get(node.receiver)
    am = config.alertmanager if config is not None else None
    if am is not None and node.timing.repeat_interval >= am.firing_ttl:
        where = f"route {node.path}" if node.path != "0" else "the root route"
        raise ConfigError(
            f"{where} sends to receiver {node.receiver!r} (an Alertmanager) every "
            f"{node.timing.repeat_interval} (repeat_interval), but its alerts lapse after "
            f"receivers.{node.receiver}.alertmanager.firing_ttl ({am.firing_ttl}): set "
            "repeat_interval below firing_ttl, or raise firing_ttl"
        )
    for child in node.children:
        _check_alertmanager_repeats(settings, child)


def new_silence(
    settings: Settings,
    teams: Sequence[Team],
    matchers: Sequence[Matcher],
    *,
    starts_at: datetime,
    ends_at: datetime,
    comment: str,
    author: str,
) -> Silence:
    """A silence added by an operator (command line or API); refused (`ConfigError`) when
    it names a label no alert carries, since it could never match."""
    import secrets

    if not matchers:
        raise ConfigError("a silence needs at least one matcher")
    if ends_at <= starts_at:
        raise ConfigError("a silence must end after it starts")
    known = alert_label_names(settings, teams)
    unknown = [
        f"label {m.name!r} is never set on an alert{did_you_mean(m.name, known)}"
        for m in matchers
        if m.name not in known
    ]
    if unknown:
        raise ConfigError("this silence could never match: " + "; ".join(unknown))
    return Silence(
        silence_id=secrets.token_hex(4),
        matchers=tuple(matchers),
        starts_at=starts_at,
        ends_at=ends_at,
        comment=comment,
        created_by=author,
        origin="cli",
    )


def configured_silences(settings: Settings, now: datetime) -> list[Silence]:
    return [
        Silence(
            silence_id=f"config:{s.id}",
            matchers=parse_all(s.matchers),
            starts_at=as_utc(s.starts) if s.starts is not None else now,
            ends_at=as_utc(s.ends),
            comment=s.comment,
            created_by=s.created_by,
            origin="config",
        )
        for s in settings.silences
    ]


def delivery_settings(settings: Settings) -> DeliverySettings:
    n = settings.notifications
    return DeliverySettings(
        max_age=n.max_age,
        backoff_initial=n.backoff_initial,
        backoff_max=n.backoff_max,
        fallback_receivers=n.fallbacks,
        health=health_settings(settings),
    )


def build_notifier(name: str, config: ReceiverSettings) -> Notifier:
    if config.slack is not None:
        slack = config.slack
        if slack.token is not None:
            assert slack.channel is not None
            return SlackBotNotifier(
                name,
                slack.token.get_secret_value(),
                slack.channel,
                base_url=slack.base_url,
                timeout=slack.timeout.total_seconds(),
                templates=slack_templates(slack.title, slack.text),
            )
        assert slack.webhook_url is not None
        return SlackWebhookNotifier(
            name,
            slack.webhook_url.get_secret_value(),
            timeout=slack.timeout.total_seconds(),
            templates=slack_templates(slack.title, slack.text),
        )
    if config.email is not None:
        email, smtp = config.email, config.email.smtp
        return EmailNotifier(
            name,
            host=smtp.host,
            port=smtp.port,
            sender=email.sender,
            recipients=list(email.to),
            tls=smtp.tls,
            username=smtp.username,
            password=smtp.password.get_secret_value() if smtp.password is not None else None,
            timeout=smtp.timeout.total_seconds(),
            ca_file=str(smtp.ca_file) if smtp.ca_file is not None else None,
            templates=email_templates(email.title, email.text),
        )
    return _http_notifier(name, config) or ConsoleNotifier(name)


def _http_notifier(name: str, config: ReceiverSettings) -> Notifier | None:
    """The receivers that POST JSON: a webhook, PagerDuty, Alertmanager."""
    if config.webhook is not None:
        hook = config.webhook
        return WebhookNotifier(
            name,
            hook.url.get_secret_value(),
            timeout=hook.timeout.total_seconds(),
            max_alerts=hook.max_alerts,
            bearer_token=_secret(hook.bearer_token),
            hmac_secret=_secret(hook.hmac_secret),
            headers=hook.headers,
            external_url=hook.external_url,
        )
    if config.pagerduty is not None:
        pager = config.pagerduty
        return PagerDutyNotifier(
            name,
            pager.routing_key.get_secret_value(),
            url=pager.url,
            timeout=pager.timeout.total_seconds(),
            client_url=pager.client_url,
        )
    if config.alertmanager is not None:
        am = config.alertmanager
        return AlertmanagerNotifier(
            name,
            am.url,
            firing_ttl=am.firing_ttl,
            timeout=am.timeout.total_seconds(),
            generator_url=am.generator_url,
            bearer_token=_secret(am.bearer_token),
        )
    if config.teams is not None:
        teams = config.teams
        return TeamsNotifier(
            name,
            teams.url.get_secret_value(),
            timeout=teams.timeout.total_seconds(),
            templates=teams_templates(teams.title, teams.text),
        )
    return None


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def _pacing(name: str, config: ReceiverSettings) -> tuple[float, str, float]:
    """(min_interval, target, attempt_timeout): what the outbox needs to pace a receiver.

    The target is what a rate limit applies to: receivers posting to the same Slack channel
    or through the same SMTP server share it."""
    if config.slack is not None:
        slack = config.slack
        if slack.token is not None:
            target = f"slack:{slack.base_url or 'slack.com'}:{slack.channel}"
        else:
            assert slack.webhook_url is not None
            digest = hashlib.sha256(slack.webhook_url.get_secret_value().encode()).hexdigest()
            target = f"slack-webhook:{digest[:16]}"
        timeout = slack.timeout.total_seconds()
        return slack.min_interval.total_seconds(), target, timeout * 2 + 5
    if config.email is not None:
        smtp = config.email.smtp
        return 0.0, f"smtp:{smtp.host}:{smtp.port}", smtp.timeout.total_seconds() * 3 + 5
    http = _http_pacing(config)
    if http is not None:
        return http
    return 0.0, f"console:{name}", 10.0


def _http_pacing(config: ReceiverSettings) -> tuple[float, str, float] | None:
    if config.webhook is not None:
        hook = config.webhook
        host = urlsplit(hook.url.get_secret_value()).netloc.rpartition("@")[2]
        return (
            hook.min_interval.total_seconds(),
            f"webhook:{host}",
            hook.timeout.total_seconds() + 5,
        )
    if config.pagerduty is not None:
        pager = config.pagerduty
        target = f"pagerduty:{urlsplit(pager.url).netloc}"
        # A message is one event per alert, each within the timeout.
        return pager.min_interval.total_seconds(), target, pager.timeout.total_seconds() * 4 + 5
    if config.alertmanager is not None:
        am = config.alertmanager
        target = f"alertmanager:{urlsplit(am.url).netloc}"
        return am.min_interval.total_seconds(), target, am.timeout.total_seconds() + 5
    if config.teams is not None:
        teams = config.teams
        digest = hashlib.sha256(teams.url.get_secret_value().encode()).hexdigest()
        return (
            teams.min_interval.total_seconds(),
            f"teams:{digest[:16]}",
            teams.timeout.total_seconds() + 5,
        )
    return None


def build_receiver(name: str, config: ReceiverSettings) -> Receiver:
    min_interval, target, attempt_timeout = _pacing(name, config)
    return Receiver(
        build_notifier(name, config),
        min_interval=min_interval,
        target=target,
        attempt_timeout=attempt_timeout,
    )


def build_receivers(settings: Settings) -> dict[str, Receiver]:
    """Every receiver; one that cannot be set up is a configuration error naming it."""
    receivers: dict[str, Receiver] = {}
    problems: list[str] = []
    for name, config in settings.receivers.items():
        try:
            receivers[name] = build_receiver(name, config)
        except Exception as exc:  # noqa: BLE001 - whatever a client library raises on bad input
            problems.append(f"  receivers.{name}: cannot be set up: {type(exc).__name__}: {exc}")
    if problems:
        raise ConfigError("\n".join([f"{len(problems)} receiver(s) cannot be set up:", *problems]))
    return receivers


def build_notifiers(settings: Settings) -> dict[str, Notifier]:
    return {name: receiver.notifier for name, receiver in build_receivers(settings).items()}


def _missing(name: str, key: str, what: str) -> ConfigError:
    return ConfigError(
        f"source '{name}' has no {what}: set TASKWARDEN_SOURCES__{name.upper()}__{key.upper()} "
        f"or provide the credential file sources__{name}__{key}"
    )


def build_source(
    name: str,
    config: SourceSettings,
    http: httpx.AsyncClient,
    meter: CallMeter | None = None,
) -> ConfiguredSource:
    poll = PollSettings(
        overlap=config.overlap,
        initial_lookback=config.initial_lookback,
        retention=config.retention,
        deadline=config.deadline,
    )
    retry = RetryPolicy(
        attempts=config.retry_attempts, total_timeout=config.retry_total.total_seconds()
    )
    limits = ResponseLimits(
        attempt_timeout=config.request_timeout.total_seconds(),
        max_body_bytes=config.max_response_bytes,
        max_json_depth=config.max_json_depth,
    )
    interval = config.interval.total_seconds()
    if isinstance(config, ElasticPathSourceSettings):
        if not config.client_id:
            raise ConfigError(f"source '{name}' has no client_id")
        if config.client_secret is None:
            raise _missing(name, "client_secret", "client secret")
        ep = ElasticPathClient(
            http,
            base_url=config.base_url,
            client_id=config.client_id,
            client_secret=config.client_secret.get_secret_value(),
            source_name=name,
            retry=retry,
            page_limit=config.page_limit,
            limits=limits,
            meter=meter,
            max_pages=config.max_pages_per_cycle,
        )
        return ConfiguredSource(ElasticPathSource(ep), poll, interval)
    if config.api_key is None:
        raise _missing(name, "api_key", "API key")
    client = DigitalRiverClient(
        http,
        base_url=config.base_url,
        auth=make_auth(config.auth, config.api_key.get_secret_value()),
        source_name=name,
        retry=retry,
        limits=limits,
        meter=meter,
        max_pages=config.max_pages_per_cycle,
    )
    return ConfiguredSource(DigitalRiverSource(client), poll, interval)


async def open_http(stack: AsyncExitStack) -> httpx.AsyncClient:
    """The one HTTP client every source shares (its connection pool); each request carries
    its own source's timeout."""
    return await stack.enter_async_context(
        httpx.AsyncClient(
            headers={
                "User-Agent": "taskwarden",
                "Accept": "application/json",
                "Accept-Encoding": "gzip, deflate",  # what the bounded decoder undoes
            }
        )
    )


def build_sources(
    settings: Settings, http: httpx.AsyncClient, meter: CallMeter | None = None
) -> list[ConfiguredSource]:
    if not settings.sources:
        raise ConfigError("the configuration defines no sources")
    return [build_source(name, config, http, meter) for name, config in settings.sources.items()]
