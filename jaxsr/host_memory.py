"""Keep freed host memory in the process, so that XLA:CPU's per-execution buffers cost no page faults.

XLA:CPU allocates one temporary buffer per execution of a program (303 MB for the paper network's
training step at batch 8) with malloc, and frees it at the end. glibc serves requests that large
with a fresh mmap and returns them with munmap, so every step first-touches every page again: 74,000
page faults and 0.15 s of kernel time per step on 2 cores (measured 2026-12-07, benchmarks/README.md). With mmap switched off, one malloc arena and no trimming, the
freed buffer stays in the heap and the next step reuses it: no page faults at all.

The cost: the process's resident memory stays at its peak instead of shrinking between steps, and
all threads allocate from one arena (XLA and tf.data allocate rarely compared with their compute).
`jaxsr`'s command line calls `keep_freed_memory()` first thing, before jax or TensorFlow start
threads (an arena limit set later does not bind threads that already have one); library users can
call it at the top of their own program. $JAXSR_KEEP_FREED_MEMORY=0 turns it off. glibc only (Linux);
elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

ENV_VAR = "JAXSR_KEEP_FREED_MEMORY"
# mallopt parameters, glibc's malloc.h
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
NEVER_TRIM = -1  # mallopt(3): "Setting M_TRIM_THRESHOLD to -1 disables trimming completely"
active = False  # whether keep_freed_memory took effect in this process


def keep_freed_memory() -> bool:
    """Sets glibc's malloc to keep freed memory for reuse; True when it took effect."""
    if os.environ.get(ENV_VAR, "1") == "0" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    global active
    # mallopt returns 1 on success; all three or the policy is not what the docstring says
    active = all([libc.mallopt(M_ARENA_MAX, 1) == 1, libc.mallopt(M_MMAP_MAX, 0) == 1,
                  libc.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM) == 1])
    return active
