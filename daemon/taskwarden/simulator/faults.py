"""Faults the simulator injects into the next N vendor API requests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FaultKind = Literal["rate_limit", "server_error", "slow", "malformed", "wrong_shape", "drop"]
FAULT_KINDS: tuple[FaultKind, ...] = (
    "rate_limit",
    "server_error",
    "slow",
    "malformed",
    "wrong_shape",
    "drop",
)


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
