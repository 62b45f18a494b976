"""How a ``petloop`` process allocates memory for the network on a CPU, set once at the edge.

A forward pass of a 3D network allocates and frees feature maps of tens of MB for every layer.
glibc's malloc hands each block above its mmap threshold straight back to the kernel when freed,
so the next pass takes every page again as a fresh page fault (millions per demo, a fifth of
its time as kernel time). Two settings keep that memory in use instead:

* glibc's ``mallopt``: no mmap for large blocks (``M_MMAP_MAX`` 0) and no trimming of the heap
  below 1 GiB free (``M_TRIM_THRESHOLD``), so freed blocks are reused;
* PyTorch's ``THP_MEM_ALLOC_ENABLE``: large tensors aligned to, and advised as, transparent huge
  pages, one fault per 2 MB instead of per 4 kB. PyTorch reads it once, at its first CPU
  allocation, so it is set before torch is imported.

The price is that the process keeps its peak memory (about a tenth more on the demo). Masks do
not change. ``bench/allocator.py`` measures both side by side.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD = 1 << 30  # bytes of free heap kept before any is returned to the kernel
THP_VARIABLE = "THP_MEM_ALLOC_ENABLE"


def keep_freed_memory() -> list[str]:
    """Apply both settings to this process; returns what was set (empty where nothing applies:
    not Linux, or not glibc). An explicit ``THP_MEM_ALLOC_ENABLE`` in the environment wins."""
    applied = []
    if not sys.platform.startswith("linux"):
        return applied
    if "torch" not in sys.modules and THP_VARIABLE not in os.environ:
        os.environ[THP_VARIABLE] = "1"
        applied.append(f"{THP_VARIABLE}=1")
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return applied
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    if mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1:
        applied.append(f"mallopt M_MMAP_MAX=0 M_TRIM_THRESHOLD={TRIM_THRESHOLD}")
    return applied
