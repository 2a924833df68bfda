"""Faults the simulator injects into the next N vendor API requests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

FaultKind = Literal[
    "rate_limit",
    "server_error",
    "slow",
    "malformed",
    "wrong_shape",
    "drop",
    "trickle",
    "gzip_bomb",
    "deep_json",
    "endless_cursor",
    "mangle",
    "echo_credentials",
]
FAULT_KINDS: tuple[FaultKind, ...] = get_args(FaultKind)
"""The hostile ones: ``trickle`` answers one byte every ``delay`` seconds; ``gzip_bomb``
sends ``size`` bytes of gzip-compressed JSON-ish padding; ``deep_json`` nests ``size``
arrays; ``endless_cursor`` answers a full page of new tasks and a new cursor, every time;
``mangle`` edits the real answer: ``records`` replace (or, with ``append``, join) the
page's tasks / jobs and ``patch`` overrides top-level keys; ``echo_credentials`` answers 401
repeating the credentials it was sent."""


@dataclass(slots=True)
class Fault:
    kind: FaultKind
    remaining: int = 1
    retry_after: float | None = None
    """Seconds sent in Retry-After (rate_limit; server_error when set)."""
    status: int = 500
    """HTTP status of a server_error."""
    delay: float = 0.0
    """Seconds a slow answer waits before answering normally."""
    endpoint: str = "any"
    """Which requests it hits: "any", or a route name such as "dr.list", "dr.detail"."""
    size: int = 0
    """Bytes of a gzip bomb (decompressed), levels of deep JSON."""
    records: list[Any] | None = None
    """``mangle``: raw records put on the page."""
    append: bool = False
    """``mangle``: add ``records`` to the page's own instead of replacing them."""
    patch: dict[str, Any] | None = None
    """``mangle``: top-level keys of the answer replaced (``{"totalSize": "many"}``)."""

    def applies_to(self, route: str) -> bool:
        return self.endpoint in ("any", route)


class FaultQueue:
    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        if fault.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {fault.kind!r}; expected one of {FAULT_KINDS}")
        if fault.remaining < 1:
            raise ValueError("a fault must apply to at least one request")
        self._faults.append(fault)

    def peek(self, route: str) -> Fault | None:
        return next((f for f in self._faults if f.applies_to(route)), None)

    def take(self, route: str) -> Fault | None:
        for fault in self._faults:
            if fault.applies_to(route):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def clear(self) -> None:
        self._faults.clear()

    def __len__(self) -> int:
        return len(self._faults)
