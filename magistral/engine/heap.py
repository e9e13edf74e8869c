"""Giving freed heap memory back to the operating system.

glibc keeps what threads free in their malloc arenas for reuse. Under waves of requests the
server's RSS crept up wave after wave (bench/soak.py: +37 MB, then ~+16 MB, then ~+4 MB per wave
of 64 streams) although nothing leaked: tracemalloc saw the Python heap flat (+75 KB over three
waves), and one `malloc_trim(0)` after a wave took RSS back below the first wave's. The engine
trims when it goes idle, so RSS follows the load down instead of keeping its high-water mark.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("magistral.engine")


def _libc_trim():  # noqa: ANN202 - a ctypes function or None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim  # glibc only; musl and macOS have no malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _libc_trim()


def release_free_heap() -> bool:
    """Return every arena's free memory to the OS; False where the C library cannot."""
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True
