"""jaxsr.host_memory: a freed large buffer is reused without page faults (glibc), and the switch turns it off."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")

# malloc + touch + free a 256 MB buffer, then again: the second touch's page faults. Transparent huge pages are
# off for the process, so that the control (policy off) counts base pages on any kernel setting.
_SECOND_TOUCH = """
import ctypes, resource, sys
from jaxsr import host_memory
print(host_memory.keep_freed_memory())
libc = ctypes.CDLL("libc.so.6")
libc.prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE: base pages even where transparent huge pages are 'always'
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 256 << 20
for attempt in range(2):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    p = libc.malloc(size)
    ctypes.memset(p, 1, size)
    libc.free(p)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(faults)
"""


def _second_touch_faults(policy: str) -> tuple[bool, int]:
    env = dict(os.environ, JAXSR_KEEP_FREED_MEMORY=policy)
    out = subprocess.run([sys.executable, "-c", _SECOND_TOUCH], env=env, capture_output=True, text=True, timeout=120, check=True)
    active, faults = out.stdout.split()
    return active == "True", int(faults)


def test_a_freed_buffer_is_reused_without_page_faults():
    pages = (256 << 20) // os.sysconf("SC_PAGE_SIZE")
    active, faults = _second_touch_faults("1")
    assert active and faults < pages / 100, faults  # the heap kept it: no fresh pages
    active, faults = _second_touch_faults("0")  # glibc's default: munmap on free, mmap again
    assert not active and faults > pages / 2, faults
