"""Links to a vendor's console page for a task, built from a per-source pattern.

The vendor APIs return an API URL for a task, which an on-call engineer cannot open in a
browser; the console page of a task is what they want, and only the operator knows its
address (it depends on the vendor, the region and the store). A source's ``console_url``
is a pattern such as ``https://console.example/stores/42/tasks/{task_id}``; its fields are
`FIELDS`, each URL-quoted. No other ``str.format`` syntax is allowed (no attribute access,
no conversions), so a pattern cannot reach into the objects it is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from string import Formatter
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

if TYPE_CHECKING:
    from collections.abc import Sequence

    from taskwarden.model import Product

FIELDS = ("task_id", "source", "product_id", "erid")


@dataclass(frozen=True, slots=True)
class ConsoleLink:
    pattern: str

    @classmethod
    def compile(cls, pattern: str) -> ConsoleLink:
        """Check the pattern once, at load; raises ValueError saying what is wrong."""
        scheme = urlsplit(pattern).scheme
        if scheme not in ("https", "http") or not urlsplit(pattern).netloc:
            raise ValueError("must be an http(s) URL such as https://console.example/{task_id}")
        try:
            parsed = list(Formatter().parse(pattern))
        except ValueError as exc:
            raise ValueError(f"is not a valid pattern: {exc}") from None
        for _, name, spec, conversion in parsed:
            if name is None:
                continue
            if name not in FIELDS or spec or conversion:
                raise ValueError(
                    f"has the field {{{name}}}; a pattern may use {', '.join(FIELDS)} "
                    "in braces, without format specs"
                )
        return cls(pattern)

    def for_task(self, task_id: str, source: str, products: Sequence[Product]) -> str | None:
        """The task's console URL, or None when the pattern needs a product the task lacks."""
        values = {
            "task_id": task_id,
            "source": source,
            "product_id": next((p.product_id for p in products if p.product_id), ""),
            "erid": next(
                (p.external_reference_id for p in products if p.external_reference_id), ""
            ),
        }
        needed = {name for _, name, _, _ in Formatter().parse(self.pattern) if name}
        if any(not values[name] for name in needed):
            return None
        return self.pattern.format_map({k: quote(v, safe="") for k, v in values.items()})
