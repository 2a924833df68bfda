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
from taskwarden.notify.render import (
    alert_view,
    common_labels,
    headline,
    labels_line,
    more_problems,
    silence_command,
    summary_line,
)
from taskwarden.notify.templating import BUILT_IN, ReceiverTemplates, templated

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

    from taskwarden.alerts import Alert, Labels, Notification
    from taskwarden.notify.render import AlertView, TaskView

# Block Kit's limits (https://api.slack.com/reference/block-kit/blocks): Slack refuses the
# whole message (``invalid_blocks``) when one is exceeded, so every piece is cut to fit.
MAX_BLOCKS = 50
MAX_HEADER = 150
MAX_SECTION = 3000
MAX_FIELD = 2000
MAX_FIELDS = 10
MAX_CONTEXT = 2000
MAX_FALLBACK = 3000
# One vendor value (an ERID list, an error description, a link) in a message: five problems,
# a title, a note and a link stay within one section.
MAX_VALUE = 450
MAX_TITLE = 200
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


def units(text: str) -> int:
    """Length as Slack counts it (UTF-16 code units, like JavaScript): an emoji counts two."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _cut(text: str, keep: int) -> str:
    """The longest start of ``text`` of at most ``keep`` UTF-16 units."""
    cut = text[:keep]
    while (excess := units(cut) - keep) > 0:
        cut = cut[: len(cut) - excess]
    return cut


def clip(text: str, limit: int) -> str:
    """Escaped mrkdwn cut to ``limit`` with an ellipsis, never inside an entity (``&amp;``),
    a link (``<…|…>``) or a code span (an open one is closed)."""
    if units(text) <= limit:
        return text
    cut = _cut(text, limit - 2)  # the ellipsis and perhaps a closing backtick
    if (amp := cut.rfind("&")) >= 0 and ";" not in cut[amp:]:
        cut = cut[:amp]
    if (lt := cut.rfind("<")) >= 0 and ">" not in cut[lt:]:
        cut = cut[:lt]
    return cut + ("…`" if cut.count("`") % 2 else "…")


def clip_plain(text: str, limit: int) -> str:
    """Plain text (a header) cut to ``limit`` with an ellipsis."""
    return text if units(text) <= limit else _cut(text, limit - 1) + "…"


def escape(text: str) -> str:
    """Slack's three control characters: a ``<!channel>`` becomes ``&lt;!channel&gt;``."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def plain_inert(text: str) -> str:
    """Untrusted text for a ``plain_text`` object (a header): one line, and angle brackets
    swapped for look-alikes, so no client or log reader can take ``<!channel>`` for a
    mention (plain text shows ``&lt;`` as it is, so escaping would garble it)."""
    return " ".join(text.split()).replace("<", "\u2039").replace(">", "\u203a")


def inert(text: str, limit: int = MAX_VALUE) -> str:
    """Untrusted text as an inline code span: no mentions, links or formatting."""
    flat = " ".join(text.split())
    return clip(f"`{escape(flat).replace('`', 'ˋ')}`", limit) if flat else "`-`"


def _safe_link(uri: str, text: str) -> str:
    """A link only for a plain https URL (nothing Slack's link syntax could be fooled by);
    anything else is shown as inert text."""
    link = f"<{uri}|{escape(text)}>"
    plain = uri.startswith("https://") and not any(c in uri for c in "<>|` \n&")
    return link if plain and units(link) <= MAX_VALUE else f"{escape(text)}: {inert(uri)}"


def _mrkdwn(text: str, limit: int = MAX_SECTION) -> MarkdownTextObject:
    return MarkdownTextObject(text=clip(text, limit), verbatim=True)


def _task_fields(task: TaskView) -> list[MarkdownTextObject]:
    pairs = list(task.fields)
    if len(pairs) > MAX_FIELDS:
        hidden = len(pairs) - (MAX_FIELDS - 1)
        pairs = [*pairs[: MAX_FIELDS - 1], ("More", f"{hidden} more fields (see the task)")]
    fields = []
    for name, value in pairs:
        label = f"*{clip(escape(name), MAX_TITLE)}*\n"
        fields.append(_mrkdwn(label + inert(value, MAX_FIELD - units(label)), MAX_FIELD))
    return fields


def _task_block(task: TaskView) -> SectionBlock:
    """Title, problems, note and link; the problems share what the section has left."""
    head = [f"*{clip(escape(task.title), MAX_TITLE)}*"]
    tail = []
    if task.problems_hidden:
        tail.append(f"• {escape(more_problems(task.problems_hidden))}")
    if task.note:
        tail.append(f"_{clip(escape(task.note), MAX_VALUE)}_")
    if task.links:
        tail.append(" · ".join(_safe_link(uri, text) for text, uri in task.links))
    spare = MAX_SECTION - sum(units(line) + 1 for line in (*head, *tail))
    share = min(spare // max(len(task.problems), 1) - 1, 2 * MAX_VALUE)
    problems = []
    for kind, code, text in task.problems:
        label = f"{escape(kind)} {inert(code, MAX_TITLE)}" if code else escape(kind)
        problems.append(clip(f"• {label}: {inert(text, MAX_SECTION)}", share))
    lines = [*head, *problems, *tail]
    return SectionBlock(text=_mrkdwn("\n".join(lines)), fields=_task_fields(task) or None)


def _alert_head(
    alert: Alert, icon: str, common: Labels, now: datetime | None
) -> tuple[SectionBlock, AlertView]:
    view = alert_view(alert, common, now)
    state = ":white_check_mark:" if alert.state.value == "resolved" else icon
    lines = [f"{state} *{clip(escape(view.title), MAX_VALUE)}*"]
    if view.note:
        lines.append(clip(escape(view.note), MAX_VALUE))
    if view.labels:
        lines.append(inert(labels_line(view.labels)))
    if view.runbook:
        lines.append(_safe_link(view.runbook, "Runbook"))
    if view.counts:  # last: a long list is what the section's own cut shortens
        lines.append("By request type: " + ", ".join(f"{inert(k)} ×{v}" for k, v in view.counts))
    return SectionBlock(text=_mrkdwn("\n".join(lines))), view


def _alert_foot(alert: Alert, hidden_tasks: int) -> list[Any]:
    facts = (
        f"severity {inert(alert.severity.value, MAX_TITLE)} · rule {inert(alert.rule, MAX_TITLE)}"
        f" · source {inert(alert.source, MAX_TITLE)}"
    )
    if hidden_tasks:
        facts += f" · {hidden_tasks} more {'task' if hidden_tasks == 1 else 'tasks'} not shown"
    return [ContextBlock(elements=[_mrkdwn(facts, MAX_CONTEXT)]), DividerBlock()]


def _header(title: str) -> HeaderBlock:
    return HeaderBlock(
        text=PlainTextObject(text=clip_plain(plain_inert(title), MAX_HEADER), emoji=False)
    )


def blocks(n: Notification, title: str | None = None) -> list[dict[str, Any]]:
    """Block Kit: header, one section per alert (severity, rule, facts, errors), a summary.

    At most `MAX_BLOCKS`: whole alerts while they fit, then the tasks of one more alert that
    fit, and a last line that says how many alerts were left out.
    """
    icon = SEVERITY_ICON.get(n.severity.value, "")
    out: list[Any] = [_header(title if title is not None else headline(n))]
    if n.test:
        out.append(SectionBlock(text=_mrkdwn("If you can read this, taskwarden can deliver here.")))
    common = common_labels(n)
    if common:
        out.append(ContextBlock(elements=[_mrkdwn(inert(labels_line(common), MAX_CONTEXT))]))
    alerts = (*n.firing, *n.resolved)
    shown = 0
    for alert in alerts:
        head, view = _alert_head(alert, icon, common, n.created_at)
        room = MAX_BLOCKS - 1 - len(out) - 3  # the summary; head, context and divider
        if room < 0 or (view.tasks and room == 0):
            break
        tasks = view.tasks[:room]
        foot = _alert_foot(alert, len(view.tasks) - len(tasks))
        out.extend([head, *map(_task_block, tasks), *foot])
        shown += 1
        if len(tasks) < len(view.tasks):
            break
    more = [line] if (line := summary_line(n)) else []
    if shown < len(alerts):
        more.append(f"… and {len(alerts) - shown} more alerts than one Slack message can show")
    last = [_mrkdwn(escape(" ".join(more)), MAX_CONTEXT)] if more else []
    if (command := silence_command(n)) is not None:
        last.append(_mrkdwn(f"Silence this group: {inert(command, MAX_CONTEXT - 20)}"))
    if last:
        out.append(ContextBlock(elements=last))
    return [b.to_dict() for b in out]


def fallback_text(n: Notification, title: str | None = None) -> str:
    """The one-line text Slack shows in notifications and where blocks cannot render."""
    return clip(
        escape(" ".join((title if title is not None else headline(n)).split())), MAX_FALLBACK
    )


def text_blocks(title: str, text: str) -> list[dict[str, Any]]:
    """A receiver's own text (escaped values, the operator's mrkdwn): the header, then
    sections of whole lines within Slack's limits."""
    out: list[Any] = [_header(title)]
    chunk: list[str] = []
    for line in text.splitlines():
        if chunk and units("\n".join([*chunk, line])) > MAX_SECTION:
            out.append(SectionBlock(text=_mrkdwn("\n".join(chunk))))
            chunk = []
        chunk.append(line)
    if chunk:
        out.append(SectionBlock(text=_mrkdwn("\n".join(chunk))))
    return [b.to_dict() for b in out[:MAX_BLOCKS]]


def templates(title: str | None, text: str | None) -> ReceiverTemplates:
    """``title`` is plain text (the header and the notification line); ``text`` is mrkdwn
    with every value Slack-escaped."""
    return ReceiverTemplates.compile(title, text, text_escape=escape)


def message(
    n: Notification, templates: ReceiverTemplates = BUILT_IN
) -> tuple[str, list[dict[str, Any]]]:
    """(notification text, blocks): the receiver's templates, or the built-in rendering
    when it has none or they fail on this message (which the message then says)."""
    title, trouble = templated(n, templates.title, headline(n), "title")
    out = None
    if templates.text is not None:
        text, failed = templated(n, templates.text, "", "text")
        trouble += failed
        out = text_blocks(title, text) if not failed else None
    out = out or blocks(n, title)
    if trouble:
        note = ContextBlock(elements=[_mrkdwn(escape(" ".join(trouble)), MAX_CONTEXT)])
        out = [out[0], note.to_dict(), *out[1:]][:MAX_BLOCKS]
    return fallback_text(n, title), out


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

    def __init__(
        self, name: str, url: str, *, timeout: float = 10.0, templates: ReceiverTemplates = BUILT_IN
    ) -> None:
        super().__init__(name)
        self._templates = templates
        self._client = AsyncWebhookClient(
            url,
            timeout=int(max(timeout, 1)),
            retry_handlers=[AsyncConnectionErrorRetryHandler(max_retry_count=1)],
        )

    async def send(self, notification: Notification, *, thread: str | None) -> Receipt:  # noqa: ARG002 - webhooks cannot thread
        try:
            text, body = message(notification, self._templates)
            response = await self._client.send(
                text=text,
                blocks=body,
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
        templates: ReceiverTemplates = BUILT_IN,
    ) -> None:
        super().__init__(name)
        self._channel = channel
        self._templates = templates
        self._client = AsyncWebClient(
            token=token,
            base_url=base_url or AsyncWebClient.BASE_URL,
            timeout=int(max(timeout, 1)),
            retry_handlers=[AsyncConnectionErrorRetryHandler(max_retry_count=1)],
        )

    async def send(self, notification: Notification, *, thread: str | None) -> Receipt:
        thread_ts = thread if notification.follow_up else None
        # A new failure in a group already told goes into its thread *and* the channel:
        # a thread alone is where nobody on call would see it.
        broadcast = thread_ts is not None and notification.new_total > 0
        try:
            text, body = message(notification, self._templates)
            response = await self._client.chat_postMessage(
                channel=self._channel,
                text=text,
                blocks=body,
                thread_ts=thread_ts,
                reply_broadcast=broadcast or None,
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
