"""Slack through slack-sdk: incoming webhooks, or a bot token with ``chat.postMessage``
(follow-ups of a group go into the thread of its first message).

Text from the vendor API (ERIDs, error descriptions, even request types) is untrusted: it
is escaped for mrkdwn (``&``, ``<``, ``>``, so ``<!channel>`` cannot ping), put in code
spans, and every mrkdwn object is ``verbatim`` so Slack turns no bare URL into a link.

Retries: slack-sdk's own retry handlers are limited to one reconnect; rate limits and
server errors surface as `TransientDeliveryError` (with Retry-After) so that the outbox,
not a sleeping coroutine, owns the wait and survives a restart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncConnectionErrorRetryHandler
from slack_sdk.models.blocks import (
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from taskwarden.delivery import Receipt
from taskwarden.errors import PermanentDeliveryError, TransientDeliveryError
from taskwarden.httputil import parse_retry_after
from taskwarden.notify.base import NotifierBase
from taskwarden.notify.render import alert_view, headline, summary_line

if TYPE_CHECKING:
    from collections.abc import Mapping

    from taskwarden.alerts import Notification
    from taskwarden.notify.render import TaskView

MAX_BLOCKS = 50
MAX_SECTION = 2900
SEVERITY_ICON = {
    "critical": ":red_circle:",
    "warning": ":large_orange_circle:",
    "info": ":information_source:",
}
PERMANENT_ERRORS = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "no_permission",
        "missing_scope",
        "channel_not_found",
        "is_archived",
        "not_in_channel",
        "invalid_blocks",
        "invalid_arguments",
        "no_service",
        "invalid_token",
        "action_prohibited",
        "posting_to_general_channel_denied",
    }
)


def escape(text: str) -> str:
    """Slack's three control characters: a ``<!channel>`` becomes ``&lt;!channel&gt;``."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def inert(text: str) -> str:
    """Untrusted text as an inline code span: no mentions, links or formatting."""
    flat = " ".join(text.split())
    return f"`{escape(flat).replace('`', 'ˋ')}`" if flat else "`-`"


def _safe_link(uri: str) -> str:
    if uri.startswith("https://") and not any(c in uri for c in "<>|` \n"):
        return f"<{uri}|Open the task>"
    return inert(uri)


def _mrkdwn(text: str) -> MarkdownTextObject:
    return MarkdownTextObject(text=text[:MAX_SECTION], verbatim=True)


def _task_blocks(task: TaskView) -> list[Any]:
    fields = [_mrkdwn(f"*{escape(name)}*\n{inert(value)}") for name, value in task.fields[:10]]
    lines = [f"*{escape(task.title)}*"]
    for kind, code, text in task.problems:
        label = f"{escape(kind)} {inert(code)}" if code else escape(kind)
        lines.append(f"• {label}: {inert(text)}")
    if task.note:
        lines.append(f"_{escape(task.note)}_")
    if task.uri:
        lines.append(_safe_link(task.uri))
    return [SectionBlock(text=_mrkdwn("\n".join(lines)), fields=fields or None)]


def blocks(n: Notification) -> list[dict[str, Any]]:
    """Block Kit: header, one section per alert (severity, rule, facts, errors), a summary."""
    icon = SEVERITY_ICON.get(n.severity.value, "")
    out: list[Any] = [HeaderBlock(text=PlainTextObject(text=headline(n)[:150], emoji=False))]
    if n.test:
        out.append(SectionBlock(text=_mrkdwn("If you can read this, taskwarden can deliver here.")))
    for alert in (*n.firing, *n.resolved):
        view = alert_view(alert)
        state = ":white_check_mark:" if alert.state.value == "resolved" else icon
        lines = [f"{state} *{escape(view.title)}*"]
        if view.note:
            lines.append(escape(view.note))
        if view.counts:
            lines.append(
                "By request type: " + ", ".join(f"{inert(k)} ×{v}" for k, v in view.counts)
            )
        out.append(SectionBlock(text=_mrkdwn("\n".join(lines))))
        for task in view.tasks:
            out.extend(_task_blocks(task))
        out.append(
            ContextBlock(
                elements=[
                    _mrkdwn(
                        f"severity {inert(alert.severity.value)} · rule {inert(alert.rule)} · "
                        f"source {inert(alert.source)}"
                    )
                ]
            )
        )
        out.append(DividerBlock())
    more = summary_line(n)
    if len(out) > MAX_BLOCKS - 1:
        out = out[: MAX_BLOCKS - 2]
        more = more or "… more alerts in this group than one message can show"
    if more:
        out.append(ContextBlock(elements=[_mrkdwn(escape(more))]))
    return [b.to_dict() for b in out]


def fallback_text(n: Notification) -> str:
    """The one-line text Slack shows in notifications and where blocks cannot render."""
    return escape(" ".join(headline(n).split()))


def _retry_after(headers: Mapping[str, Any] | None) -> float | None:
    if not headers:
        return None
    for key, value in headers.items():
        if key.lower() == "retry-after":
            raw = value[0] if isinstance(value, list) else value
            return parse_retry_after(str(raw))
    return None


def _classify(
    receiver: str, status: int, error: str, headers: Mapping[str, Any] | None
) -> Exception:
    if status == 429 or error in {"ratelimited", "rate_limited"}:
        return TransientDeliveryError(
            f"Slack rate limit ({error or status})",
            receiver=receiver,
            retry_after=_retry_after(headers),
        )
    if error in PERMANENT_ERRORS or status in (400, 401, 403, 404, 410):
        return PermanentDeliveryError(
            f"Slack refused the message: {error or status}", receiver=receiver
        )
    return TransientDeliveryError(
        f"Slack answered {status} {error}".strip(),
        receiver=receiver,
        retry_after=_retry_after(headers),
    )


class SlackWebhookNotifier(NotifierBase):
    """An incoming webhook: one channel, no threads."""

    def __init__(self, name: str, url: str, *, timeout: float = 10.0) -> None:
        super().__init__(name)
        self._client = AsyncWebhookClient(
            url,
            timeout=int(max(timeout, 1)),
            retry_handlers=[AsyncConnectionErrorRetryHandler(max_retry_count=1)],
        )

    async def send(self, notification: Notification, *, thread: str | None) -> Receipt:  # noqa: ARG002 - webhooks cannot thread
        try:
            response = await self._client.send(
                text=fallback_text(notification),
                blocks=blocks(notification),
                unfurl_links=False,
                unfurl_media=False,
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransientDeliveryError(
                f"Slack webhook unreachable: {exc!r}", receiver=self._name
            ) from exc
        if response.status_code == 200:
            return Receipt()
        raise _classify(
            self._name, response.status_code, (response.body or "").strip(), response.headers
        )

    async def check(self) -> str:
        return "webhook URL configured (a webhook can only be verified by posting: use test-notify)"


class SlackBotNotifier(NotifierBase):
    """A bot token posting with ``chat.postMessage``; follow-ups go into the group's thread."""

    def __init__(
        self,
        name: str,
        token: str,
        channel: str,
        *,
        base_url: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        super().__init__(name)
        self._channel = channel
        self._client = AsyncWebClient(
            token=token,
            base_url=base_url or AsyncWebClient.BASE_URL,
            timeout=int(max(timeout, 1)),
            retry_handlers=[AsyncConnectionErrorRetryHandler(max_retry_count=1)],
        )

    async def send(self, notification: Notification, *, thread: str | None) -> Receipt:
        thread_ts = thread if notification.follow_up else None
        try:
            response = await self._client.chat_postMessage(
                channel=self._channel,
                text=fallback_text(notification),
                blocks=blocks(notification),
                thread_ts=thread_ts,
                unfurl_links=False,
                unfurl_media=False,
            )
        except SlackApiError as exc:
            error = str(exc.response.get("error", "")) if exc.response is not None else ""
            status = exc.response.status_code if exc.response is not None else 0
            headers = exc.response.headers if exc.response is not None else None
            raise _classify(self._name, status, error, headers) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransientDeliveryError(
                f"Slack API unreachable: {exc!r}", receiver=self._name
            ) from exc
        ts = response.get("ts")
        return Receipt(thread_ref=thread_ts or (str(ts) if ts else None))

    async def check(self) -> str:
        try:
            response = await self._client.auth_test()
        except SlackApiError as exc:
            error = exc.response.get("error", "") if exc.response is not None else ""
            raise PermanentDeliveryError(
                f"auth.test failed: {error}", receiver=self._name
            ) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransientDeliveryError(
                f"Slack API unreachable: {exc!r}", receiver=self._name
            ) from exc
        return f"auth.test ok: bot {response.get('user')} in team {response.get('team')}"
