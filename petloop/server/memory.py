"""Giving a finished session's memory back to the operating system.

Every ``petloop`` command keeps freed memory in the process (:mod:`petloop.cli.memory`: glibc's
``mallopt`` with no mmap for large blocks and no trimming below 1 GiB free), which saves page
faults between forward passes but means that the arrays of an ended session (CT, PET, their
preprocessed copies, masks and packed payloads: about 2.5 GB for a whole-body case) would stay
with the server for good. :func:`release_memory` collects what is unreachable and then asks
glibc to return every free page of its heaps (``malloc_trim(0)``); the server calls it, off the
event loop, when a session is deleted or expires.

What stays: the loaded networks and the tracer classifier (shared by all sessions), the
allocator's bookkeeping, and pages still in use. Elsewhere than Linux with glibc (musl, macOS,
Windows) only the garbage collection runs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import sys
import threading

_lock = threading.Lock()  # one release at a time: a second would find nothing more to do


@functools.cache
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes = (ctypes.c_size_t,)
    trim.restype = ctypes.c_int
    return trim


def release_memory() -> bool:
    """Collect garbage and return the free heap to the OS; True where ``malloc_trim`` ran."""
    with _lock:
        gc.collect()
        trim = _malloc_trim()
        if trim is None:
            return False
        trim(0)
        return True
