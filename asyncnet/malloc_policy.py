"""Keep freed memory in the process, so steady-state runs do not page-fault fresh arrays.

Caffe2 tensors kept their capacity between runs; numpy kernels allocate their outputs and
scratch arrays (im2col columns, padded copies, partial sums) afresh on every run. With glibc's
default malloc that costs page faults for any block past its mmap threshold, and its
*dynamic* thresholds make it worse: once a block of a few hundred KiB is freed, the trim
threshold becomes twice that size, and a run that frees two such blocks returns the heap's top
to the kernel, so the next run faults the same pages in again. Measured on the bench nets
(2-vCPU machine, simple executor, 200 runs): INCEPTION x3 took 375 minor faults per run and
2.49 ms, 0.7 faults and 1.55 ms with this policy; SqueezeNet 124 faults and 16.6 ms, 8 and
10.8 ms; ResNet-50 and MobileNet had few faults to begin with and did not change.

:func:`retain_freed_memory` fixes both thresholds (``mallopt``), which also turns glibc's
adjustment off: blocks under :data:`MMAP_THRESHOLD` come from the heap, and up to
:data:`TRIM_THRESHOLD` of free memory at a heap's top stays mapped. Larger outputs are reused
by :mod:`asyncnet.ops._buffers` instead. A process's resident size can then stay at its peak
(at most ``TRIM_THRESHOLD`` more per malloc arena), which is what a serving process wants.

It runs once per process, when the first net is prepared, and only on glibc; elsewhere it does
nothing. A program that must return memory eagerly calls :func:`disable` before preparing nets.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading

_log = logging.getLogger(__name__)

# glibc's mallopt parameter numbers (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

# The largest mmap threshold glibc accepts on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX); the output
# buffers of asyncnet.ops._buffers take over from this size on.
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 128 << 20

_lock = threading.Lock()
_state: str = "pending"  # "pending", "applied", "unavailable", "disabled"


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018 -- present only in glibc
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def retain_freed_memory() -> bool:
    """Apply the policy once per process; True when it is in force (glibc, not disabled)."""
    global _state
    with _lock:
        if _state == "pending":
            libc = _glibc()
            ok = (
                libc is not None
                and libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
            )
            _state = "applied" if ok else "unavailable"
            if not ok:
                _log.debug("malloc policy not applied: not glibc, or mallopt refused")
        return _state == "applied"


def disable() -> None:
    """Never apply the policy in this process (has no effect once it was applied)."""
    global _state
    with _lock:
        if _state == "pending":
            _state = "disabled"


def state() -> str:
    """``pending``, ``applied``, ``unavailable`` (not glibc) or ``disabled``."""
    return _state
