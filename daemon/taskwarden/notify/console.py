"""Notifications printed as text: the demo, ``once --dry-run`` and a last-resort receiver."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

from taskwarden.delivery import Receipt
from taskwarden.notify.base import NotifierBase
from taskwarden.notify.render import plain_text

if TYPE_CHECKING:
    from taskwarden.alerts import Notification


class ConsoleNotifier(NotifierBase):
    def __init__(self, name: str, stream: TextIO | None = None) -> None:
        super().__init__(name)
        self._stream = stream

    async def send(self, notification: Notification, *, thread: str | None) -> Receipt:  # noqa: ARG002 - no threads on a console
        stream = self._stream or sys.stdout
        stream.write(f"--- to {self._name} ---\n{plain_text(notification)}")
        stream.flush()
        return Receipt()

    async def check(self) -> str:
        return "console: always available"
