"""A stored row that cannot be decoded means the file is damaged."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from taskwarden.errors import StateCorruptError, StateError

if TYPE_CHECKING:
    from collections.abc import Iterator


@contextlib.contextmanager
def decoding(what: str) -> Iterator[None]:
    """Any error decoding a stored ``what`` becomes `StateCorruptError` (the file is moved
    aside); a payload from a newer taskwarden stays the `StateError` it is."""
    try:
        yield
    except StateError:
        raise
    except Exception as exc:
        raise StateCorruptError(f"a stored {what} cannot be decoded: {exc!r}"[:300]) from exc
