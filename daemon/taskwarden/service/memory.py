"""Give memory back to the operating system after a large cycle.

A first poll over a 100,000-task window builds ~100k objects and frees them; CPython and
glibc keep the freed memory mapped, so the daemon would idle at its peak size for months.
After a cycle that handled many events, a collection and glibc's ``malloc_trim`` return it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from functools import cache

LARGE_CYCLE = 5_000
"""Events in a cycle above which memory is trimmed (idle cycles never pay for it)."""


@cache
def _malloc_trim() -> ctypes._NamedFuncPointer | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


def release_after(events: int) -> bool:
    if events < LARGE_CYCLE:
        return False
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
    return True
