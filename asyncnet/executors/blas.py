"""BLAS-aware scheduling: how many BLAS threads an operator gets, decided by the executor.

OpenBLAS (what numpy wheels ship) has one thread count for the whole process. A lone
GEMM should use every core; two GEMMs running at once on different Python threads
should use one BLAS thread each, or they oversubscribe the cores (on 2 cores, the WIDE
bench's concurrent multi-threaded GEMMs ran 1.5x slower than one after the other; with
one thread each they ran 1.8x faster).

The :class:`BlasGovernor` is process-wide, like the setting it manages. Executors call
:meth:`~BlasGovernor.enter` before a chain that holds BLAS-heavy operators and
:meth:`~BlasGovernor.exit` after it. While two or more such chains run, the count is
1; when at most one runs, it is back to what it was before (a lone chain gets the
library's full count). Changes happen under the governor's lock, so the count only
depends on how many chains are inside, never on the order of calls. A GEMM already
running keeps the thread count it started with (OpenBLAS reads the count when a call
begins; changing it while other threads are inside GEMMs was stress-tested: every
result equals the 1- or the N-thread result, nothing else). Results can differ in
the last bits between 1 and N threads for some shapes, as with any BLAS thread setting.

Only pthreads OpenBLAS is governed (found through threadpoolctl when installed, else in
``/proc/self/maps``); with other BLAS libraries, or none found, the governor does
nothing and BLAS keeps its own setting. ``ExecutorOptions(blas_threads=N)`` replaces
the policy with a fixed limit for the whole run.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

# Operator types whose kernels spend their time in BLAS (GEMM/GEMV through numpy).
# Integer kernels (Int8*) are left out: numpy's integer matmul does not use BLAS.
_BLAS_OP_TYPES: set[str] = {
    "Conv",
    "Conv1D",
    "Conv2D",
    "Conv3D",
    "ConvTranspose",
    "ConvGradient",
    "ConvTransposeGradient",
    "FC",
    "FCTransposed",
    "FCGradient",
    "MatMul",
    "BatchMatMul",
    # Conv / FC with a fused Relu epilogue (inference rewrites).
    "ConvRelu",
    "FCRelu",
}


def register_blas_op(op_type: str) -> None:
    """Declare that operators of ``op_type`` spend their time in BLAS (they join the policy)."""
    _BLAS_OP_TYPES.add(op_type)


def blas_op_types() -> frozenset[str]:
    """Operator types the executors treat as BLAS-heavy."""
    return frozenset(_BLAS_OP_TYPES)


def is_blas_op(op_type: str) -> bool:
    """Whether operators of ``op_type`` are BLAS-heavy."""
    return op_type in _BLAS_OP_TYPES


@dataclass(frozen=True)
class BlasLibrary:
    """One loaded BLAS library whose process-wide thread count can be read and set."""

    path: str
    get: Callable[[], int]
    set: Callable[[int], None]


_OPENBLAS_AFFIXES = [(p, s) for p in ("", "scipy_") for s in ("", "64_", "_64")]
_OPENBLAS_NAMES = ("libopenblas", "libscipy_openblas", "openblas")


def openblas_symbols(path: str) -> tuple[ctypes.CDLL, str, str] | None:
    """The OpenBLAS already loaded from ``path`` and its symbol affixes (``scipy_``, ``64_``, ...),
    or None when it is not an OpenBLAS. Binds the loaded copy (RTLD_NOLOAD): loading a second one
    would govern nothing."""
    try:
        lib = ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0))
    except OSError:
        return None
    for prefix, suffix in _OPENBLAS_AFFIXES:
        if all(hasattr(lib, f"{prefix}openblas_{f}_num_threads{suffix}") for f in ("get", "set")):
            return lib, prefix, suffix
    return None


def _openblas(path: str) -> BlasLibrary | None:
    """Bind the get/set thread-count calls of the OpenBLAS at ``path`` (None if it has none)."""
    found = openblas_symbols(path)
    if found is None:
        return None
    lib, prefix, suffix = found
    getter = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}")
    setter = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}")
    parallel = getattr(lib, f"{prefix}openblas_get_parallel{suffix}", None)
    # 2 means the OpenMP threading layer: its limit is per thread, not what this module manages.
    if parallel is not None and parallel() != 1:
        return None
    getter.restype = ctypes.c_int
    getter.argtypes = []
    setter.restype = None
    setter.argtypes = [ctypes.c_int]
    return BlasLibrary(path, getter, setter)


def _paths_from_threadpoolctl() -> list[str] | None:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    return [str(i["filepath"]) for i in threadpool_info() if i.get("internal_api") == "openblas"]


def _paths_from_maps() -> list[str]:
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    paths: list[str] = []
    for line in lines:
        path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
        if path.startswith("/") and os.path.basename(path).startswith(_OPENBLAS_NAMES) and path not in paths:
            paths.append(path)
    return paths


def find_blas_libraries() -> list[BlasLibrary]:
    """The loaded pthreads OpenBLAS libraries (numpy's, scipy's, ...), in load order."""
    import numpy  # noqa: F401 - make sure numpy's BLAS is loaded before looking

    paths = _paths_from_threadpoolctl()
    if paths is None:
        paths = _paths_from_maps()
    libs = [lib for lib in (_openblas(p) for p in paths) if lib is not None]
    if not libs:
        log.debug("no pthreads OpenBLAS found; BLAS threads are left to the library")
    return libs


class BlasGovernor:
    """Lowers the BLAS thread count to 1 while two or more BLAS-heavy chains run.

    Args:
        libraries: the libraries to govern; None finds them on first use.
    """

    def __init__(self, libraries: Sequence[BlasLibrary] | None = None) -> None:
        self._lock = threading.Lock()
        self._libs: list[BlasLibrary] | None = list(libraries) if libraries is not None else None
        self._running = 0
        self._forced = 0
        self._saved: list[int] | None = None  # counts to restore while lowered
        self.lowerings = 0  # how often the count was lowered (diagnostics)

    @property
    def libraries(self) -> list[BlasLibrary]:
        if self._libs is None:
            with self._lock:
                if self._libs is None:
                    self._libs = find_blas_libraries()
        return self._libs

    @property
    def active(self) -> bool:
        """Whether there is anything to govern."""
        return bool(self.libraries)

    @property
    def running(self) -> int:
        """BLAS-heavy chains inside :meth:`enter`/:meth:`exit` now (all executors of the process)."""
        return self._running

    def enter(self) -> None:
        """A BLAS-heavy chain starts; the second one at a time lowers the count to 1."""
        with self._lock:
            self._running += 1
            self._update()

    def exit(self) -> None:
        """A BLAS-heavy chain ended; with at most one left the count is restored."""
        with self._lock:
            self._running -= 1
            self._update()

    @contextlib.contextmanager
    def single_threaded(self) -> Iterator[None]:
        """One BLAS thread for the duration, whatever else runs (for a runner that overlaps heavy
        work on several threads by itself, e.g. the recurrent timestep executor)."""
        with self._lock:
            self._forced += 1
            self._update()
        try:
            yield
        finally:
            with self._lock:
                self._forced -= 1
                self._update()

    def _update(self) -> None:
        # Called with the lock held: the count is lowered exactly while two or more heavy chains
        # run or someone forces it, and restored to what it was as soon as neither holds.
        low = self._running >= 2 or self._forced > 0
        if low and self._saved is None:
            libs = self._libs or []
            saved = [lib.get() for lib in libs]
            for lib, n in zip(libs, saved):
                if n > 1:
                    lib.set(1)
            self._saved = saved
            self.lowerings += 1
        elif not low and self._saved is not None:
            for lib, n in zip(self._libs or [], self._saved):
                if n > 1:
                    lib.set(n)
            self._saved = None


_governor: BlasGovernor | None = None
_governor_lock = threading.Lock()


def blas_governor() -> BlasGovernor:
    """The process-wide governor (libraries found on first call)."""
    global _governor
    if _governor is None:
        with _governor_lock:
            if _governor is None:
                gov = BlasGovernor()
                gov.libraries  # noqa: B018 - find them now, not inside the first run
                _governor = gov
    return _governor
