"""A poller + outbox wired to the simulator, a loopback Slack and (optionally) aiosmtpd.

Time: the simulator's frozen clock is the daemon's clock; each `cycle` advances it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from aiosmtpd.controller import Controller

from taskwarden.alerting import Alerting
from taskwarden.alerts import Alert, AlertState, Notification
from taskwarden.health import HealthSettings
from taskwarden.matchers import parse_all
from taskwarden.notify.email import EmailNotifier
from taskwarden.notify.slack import SlackBotNotifier, SlackWebhookNotifier
from taskwarden.outbox import DeliverySettings, OutboxSender, Receiver
from taskwarden.poller import PollFailed, PollSettings, poll_or_report
from taskwarden.routing import Route

if TYPE_CHECKING:
    from datetime import datetime
    from email.message import Message

    from taskwarden.delivery import Notifier
    from taskwarden.links import ConsoleLink
    from taskwarden.poller import CycleReport
    from taskwarden.rules import Team
    from taskwarden.simulator import Simulator
    from taskwarden.simulator.slack import SlackServer
    from taskwarden.sources.base import Source
    from taskwarden.state import SqliteStateStore

POLL = PollSettings(
    overlap=timedelta(minutes=5), initial_lookback=timedelta(hours=24), retention=timedelta(days=7)
)
FAST_DELIVERY = DeliverySettings(
    backoff_initial=timedelta(seconds=1),
    backoff_max=timedelta(seconds=30),
    fallback_receivers=("ops",),
)


def notification_of(receiver: str, *alerts: Alert) -> Notification:
    """One group's message to ``receiver`` showing exactly ``alerts`` (firing and resolved)."""
    firing = tuple(a for a in alerts if a.state is AlertState.FIRING)
    resolved = tuple(a for a in alerts if a.state is AlertState.RESOLVED)
    return Notification(
        receiver, f"{receiver}|catalog", (("team", "catalog"),), firing, resolved,
        firing_total=len(firing), resolved_total=len(resolved),
    )  # fmt: skip


def failed_with(result: object, error: type[Exception]) -> bool:
    """The cycle failed, and with this kind of error."""
    return isinstance(result, PollFailed) and isinstance(result.error, error)


def tree(**kwargs: Any) -> Route:
    """A default route to Slack ``alerts`` and the ops team to the ``ops`` receiver."""
    defaults: dict[str, Any] = {
        "receiver": "slack",
        "group_by": ("team", "rule", "kind"),
        "group_wait": timedelta(0),
        "group_interval": timedelta(minutes=1),
        "repeat_interval": timedelta(hours=4),
        "routes": (Route(receiver="ops", matchers=parse_all(['team="ops"'])),),
    }
    defaults.update(kwargs)
    return Route(**defaults)


def slack_bot(
    slack: SlackServer, name: str = "slack", channel: str = "alerts", **kw: Any
) -> SlackBotNotifier:
    return SlackBotNotifier(name, slack.token, channel, base_url=slack.api_url, timeout=5, **kw)


def slack_hook(slack: SlackServer, name: str = "ops", **kw: Any) -> SlackWebhookNotifier:
    return SlackWebhookNotifier(name, slack.webhook_url(), timeout=5, **kw)


def receivers(notifiers: dict[str, Notifier | Receiver]) -> dict[str, Receiver]:
    """Notifiers as outbox receivers (unpaced), receivers as they are."""
    return {
        name: n if isinstance(n, Receiver) else Receiver(n, attempt_timeout=10)
        for name, n in notifiers.items()
    }


class Mailbox:
    """aiosmtpd handler that keeps what it receives and can answer with a chosen code."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.answer: str | None = None

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        if self.answer is not None:
            return self.answer
        from email import message_from_bytes, policy

        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"


class SmtpServer:
    def __init__(self, port: int) -> None:
        self.mailbox = Mailbox()
        self.port = port
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


def email_notifier(port: int, name: str = "mail") -> EmailNotifier:
    return EmailNotifier(
        name,
        host="127.0.0.1",
        port=port,
        sender="taskwarden@example.com",
        recipients=["oncall@example.com"],
        tls="none",
        timeout=3,
    )


@dataclass
class Harness:
    sim: Simulator
    source: Source
    store: SqliteStateStore
    notifiers: dict[str, Notifier | Receiver]
    teams: tuple[Team, ...]
    route: Route = field(default_factory=tree)
    delivery: DeliverySettings = FAST_DELIVERY
    health: HealthSettings = field(default_factory=HealthSettings)
    skew: timedelta = timedelta(0)
    """How far our clock is ahead of the vendor's (the simulator's)."""
    console_links: dict[str, ConsoleLink] = field(default_factory=dict)
    sender: OutboxSender = field(init=False)

    def __post_init__(self) -> None:
        self.sender = OutboxSender(
            self.store, receivers(self.notifiers), self.delivery, clock=self.now
        )

    def now(self) -> datetime:
        """Our clock: the simulator's, plus the skew."""
        return self.sim.now() + self.skew

    @property
    def alerting(self) -> Alerting:
        return Alerting(
            teams=self.teams,
            route=self.route,
            health=self.health,
            console_links=self.console_links,
        )

    async def poll(self, advance: timedelta = timedelta(minutes=1)) -> CycleReport | PollFailed:
        self.sim.advance_clock(advance)
        return await poll_or_report(self.source, self.store, POLL, self.now, alerting=self.alerting)

    async def cycle(self, advance: timedelta = timedelta(minutes=1)) -> CycleReport | PollFailed:
        """Poll, then one delivery round (what the daemon's two jobs do)."""
        result = await self.poll(advance)
        await self.sender.deliver_due()
        return result

    async def deliver_until_empty(
        self, rounds: int = 50, step: timedelta = timedelta(seconds=5)
    ) -> int:
        """Delivery rounds with the clock moving on (backoffs elapse); rounds used."""
        for used in range(1, rounds + 1):
            await self.sender.deliver_due()
            if self.store.outbox_depth()[0] == 0:
                return used
            self.sim.advance_clock(step)
            await asyncio.sleep(0)
        raise AssertionError(f"outbox still holds {self.store.outbox_depth()[0]} entries")
