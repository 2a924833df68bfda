"""E-mail through SMTP (aiosmtplib): one multipart message (plain text + HTML) per group.

Header safety: every header value built from vendor text goes through `header_safe`
(control characters, CR and LF removed) and `email.message.EmailMessage`, whose policy
refuses a header with a line break; the body is HTML-escaped.
"""

from __future__ import annotations

import html
import re
import ssl
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

import aiosmtplib

from taskwarden.delivery import Receipt
from taskwarden.errors import PermanentDeliveryError, TransientDeliveryError
from taskwarden.notify.base import NotifierBase
from taskwarden.notify.render import (
    alert_view,
    common_labels,
    headline,
    labels_line,
    more_problems,
    plain_text,
    silence_command,
    summary_line,
)
from taskwarden.notify.templating import BUILT_IN, ReceiverTemplates, templated

if TYPE_CHECKING:
    from taskwarden.alerts import Notification
    from taskwarden.notify.render import AlertView, TaskView

TlsMode = Literal["starttls", "implicit", "none"]
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
MAX_SUBJECT = 200


def header_safe(text: str) -> str:
    return _CONTROL.sub(" ", text).strip()[:MAX_SUBJECT]


def subject(n: Notification) -> str:
    return header_safe(f"[taskwarden] {headline(n)}")


def templates(title: str | None, text: str | None) -> ReceiverTemplates:
    """``title`` is the subject; ``text`` the body, rendered as the plain part and again,
    HTML-autoescaped, as the HTML part."""
    return ReceiverTemplates.compile(title, text, with_html=True)


def bodies(n: Notification, templates: ReceiverTemplates = BUILT_IN) -> tuple[str, str, str]:
    """(subject, plain text, HTML): the receiver's templates, or the built-in rendering
    when it has none or they fail on this message (which the message then says)."""
    title, trouble = templated(n, templates.title, "", "title")
    text, failed = templated(n, templates.text, "", "text")
    html_text, _ = templated(n, templates.html, "", "text")
    trouble += failed
    if templates.text is None or failed:
        text, html_text = plain_text(n), html_body(n)
    else:
        html_text = (
            "<html><body><div style='white-space: pre-wrap'>" + html_text + "</div></body></html>"
        )
    if trouble:
        text = "\n".join([*trouble, "", text])
        html_text = html_text.replace(
            "<body>", "<body>" + "".join(f"<p><i>{html.escape(t)}</i></p>" for t in trouble), 1
        )
    return header_safe(title) if title else subject(n), text, html_text


def link(uri: str, text: str) -> str:
    """A clickable link for an http(s) URL (escaped as an attribute); anything else (a
    ``javascript:`` URL from a vendor) is shown as text only."""
    e = html.escape
    if urlsplit(uri).scheme in ("https", "http"):
        return f'<a href="{e(uri, quote=True)}">{e(text)}</a>'
    return f"{e(text)}: <code>{e(uri)}</code>"


def _task_html(task: TaskView) -> list[str]:
    e = html.escape
    rows = "".join(f"<tr><th align='left'>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in task.fields)
    parts = [f"<h4>{e(task.title)}</h4><table>{rows}</table>"]
    if task.problems:
        items = "".join(
            f"<li>{e(kind)}{f' <code>{e(code)}</code>' if code else ''}: {e(text)}</li>"
            for kind, code, text in task.problems
        )
        if task.problems_hidden:
            items += f"<li>{e(more_problems(task.problems_hidden))}</li>"
        parts.append(f"<ul>{items}</ul>")
    if task.note:
        parts.append(f"<p><i>{e(task.note)}</i></p>")
    if task.links:
        parts.append(f"<p>{' · '.join(link(uri, text) for text, uri in task.links)}</p>")
    return parts


def _alert_html(view: AlertView) -> list[str]:
    e = html.escape
    alert = view.alert
    parts = [
        f"<h3>{e(view.title)}</h3>",
        (
            f"<p>severity <b>{e(alert.severity.value)}</b> · rule {e(alert.rule)} · "
            f"source {e(alert.source)}</p>"
        ),
    ]
    if view.note:
        parts.append(f"<p>{e(view.note)}</p>")
    if view.labels:
        parts.append(f"<p><small>{e(labels_line(view.labels))}</small></p>")
    if view.runbook:
        parts.append(f"<p>{link(view.runbook, 'Runbook')}</p>")
    if view.counts:
        items = "".join(f"<li>{e(k)}: {v}</li>" for k, v in view.counts)
        parts.append(f"<p>By request type:</p><ul>{items}</ul>")
    for task in view.tasks:
        parts.extend(_task_html(task))
    return parts


def html_body(n: Notification) -> str:
    e = html.escape
    parts = [f"<h2>{e(headline(n))}</h2>"]
    common = common_labels(n)
    if common:
        parts.append(f"<p><small>{e(labels_line(common))}</small></p>")
    for alert in (*n.firing, *n.resolved):
        parts.extend(_alert_html(alert_view(alert, common, n.created_at)))
    if (more := summary_line(n)) is not None:
        parts.append(f"<p>{e(more)}</p>")
    if (command := silence_command(n)) is not None:
        parts.append(f"<p>Silence this group:<br><code>{e(command)}</code></p>")
    return "<html><body>" + "\n".join(parts) + "</body></html>"


class EmailNotifier(NotifierBase):
    def __init__(
        self,
        name: str,
        *,
        host: str,
        port: int,
        sender: str,
        recipients: list[str],
        tls: TlsMode = "starttls",
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        ca_file: str | None = None,
        templates: ReceiverTemplates = BUILT_IN,
    ) -> None:
        super().__init__(name)
        self._templates = templates
        self._host = host
        self._port = port
        self._sender = sender
        self._recipients = recipients
        self._tls = tls
        self._username = username
        self._password = password
        self._timeout = timeout
        # A private CA for the server's certificate; otherwise the system's trust store.
        self._tls_context = ssl.create_default_context(cafile=ca_file) if ca_file else None

    def message(self, n: Notification, *, thread: str | None = None) -> EmailMessage:
        msg = EmailMessage()
        title, text, html_text = bodies(n, self._templates)
        msg["Subject"] = title
        msg["From"] = self._sender
        msg["To"] = ", ".join(self._recipients)
        msg["Message-ID"] = make_msgid(domain="taskwarden")
        if n.created_at is not None:
            msg["Date"] = format_datetime(n.created_at)
        if thread and n.follow_up:
            msg["In-Reply-To"] = thread
            msg["References"] = thread
        msg.set_content(text)
        msg.add_alternative(html_text, subtype="html")
        return msg

    async def send(self, notification: Notification, *, thread: str | None) -> Receipt:
        msg = self.message(notification, thread=thread)
        await self._deliver(msg)
        return Receipt(
            thread_ref=thread if notification.follow_up and thread else msg["Message-ID"]
        )

    async def _deliver(self, msg: EmailMessage | None) -> None:
        try:
            client = aiosmtplib.SMTP(
                hostname=self._host,
                port=self._port,
                use_tls=self._tls == "implicit",
                start_tls=True if self._tls == "starttls" else False,  # noqa: SIM210 - explicit tri-state
                timeout=self._timeout,
                tls_context=self._tls_context,
            )
            async with client:
                if self._username:
                    await client.login(self._username, self._password or "")
                if msg is not None:
                    await client.send_message(msg)
        except aiosmtplib.SMTPResponseException as exc:
            text = f"SMTP {exc.code} {exc.message}"
            if 400 <= exc.code < 500:
                raise TransientDeliveryError(text, receiver=self._name) from exc
            raise PermanentDeliveryError(text, receiver=self._name) from exc
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            text = f"SMTP refused every recipient: {exc.recipients}"
            if codes and all(400 <= c < 500 for c in codes):
                raise TransientDeliveryError(text, receiver=self._name) from exc
            raise PermanentDeliveryError(text, receiver=self._name) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise TransientDeliveryError(
                f"SMTP server {self._host}:{self._port} unavailable: {exc}", receiver=self._name
            ) from exc

    async def check(self) -> str:
        await self._deliver(None)
        login = "logged in" if self._username else "connected (no login configured)"
        return f"SMTP {self._host}:{self._port} ({self._tls}): {login}"
