"""``cblas_sgemm``/``cblas_dgemm`` of the OpenBLAS numpy already loaded, called through ctypes.

numpy's ``matmul`` cannot accumulate into its output (BLAS's ``beta``) and refuses operands
whose rows overlap, so a convolution written as a sum of GEMMs over shifted views of one
padded image would need a copy of every shifted view (im2col) or a pass per partial sum.
The same OpenBLAS that numpy uses takes both: this module binds its CBLAS GEMMs, for the
kernels that are measured faster with them (see :mod:`asyncnet.ops._conv_fast`).

The library is the one :mod:`asyncnet.executors.blas` governs (found and opened
by :func:`asyncnet.executors.blas.openblas_symbols`, never a second copy), so its
thread count follows the executor's BLAS policy. ctypes releases the GIL for the call.
Without a pthreads OpenBLAS exporting CBLAS (MKL, Accelerate, a numpy built otherwise),
:func:`gemm_for` returns None and kernels keep their numpy paths.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# Kernels consult this before choosing a CBLAS path (bench/ flips it to measure what it saves).
ENABLED = True

_ROW_MAJOR, _NO_TRANS = 101, 111


class Gemm:
    """``C = A @ B + beta * C`` in row-major order, operands given by address and leading dimension."""

    def __init__(self, fn: Any, dtype: np.dtype[Any]) -> None:
        self._fn = fn
        self.dtype = dtype

    def __call__(
        self, m: int, n: int, k: int, a: int, lda: int, b: int, ldb: int, beta: float, c: int, ldc: int
    ) -> None:
        """``a``, ``b``, ``c``: addresses of arrays of :attr:`dtype` the caller keeps alive and in bounds."""
        self._fn(_ROW_MAJOR, _NO_TRANS, _NO_TRANS, m, n, k, 1.0, a, lda, b, ldb, beta, c, ldc)


_lock = threading.Lock()
_bound: dict[str, Gemm | None] | None = None


def _bind() -> dict[str, Gemm | None]:
    from asyncnet.executors.blas import find_blas_libraries, openblas_symbols

    found: dict[str, Gemm | None] = {"f": None, "d": None}
    for blas in find_blas_libraries():
        symbols = openblas_symbols(blas.path)
        if symbols is None:
            continue
        lib, prefix, suffix = symbols
        sgemm = getattr(lib, f"{prefix}cblas_sgemm{suffix}", None)
        dgemm = getattr(lib, f"{prefix}cblas_dgemm{suffix}", None)
        config = getattr(lib, f"{prefix}openblas_get_config{suffix}", None)
        if sgemm is None or dgemm is None or config is None:
            continue
        config.restype = ctypes.c_char_p
        config.argtypes = []
        # ILP64 builds (numpy's wheels: scipy_openblas64_) take 64-bit integers; the enums stay int.
        ilp64 = b"USE64BITINT" in (config() or b"")
        blasint = ctypes.c_int64 if ilp64 else ctypes.c_int
        for fn, real, code in ((sgemm, ctypes.c_float, "f"), (dgemm, ctypes.c_double, "d")):
            fn.restype = None
            fn.argtypes = [
                ctypes.c_int,
                ctypes.c_int,
                ctypes.c_int,
                blasint,
                blasint,
                blasint,
                real,
                ctypes.c_void_p,
                blasint,
                ctypes.c_void_p,
                blasint,
                real,
                ctypes.c_void_p,
                blasint,
            ]
            found[code] = Gemm(fn, np.dtype(np.float32 if code == "f" else np.float64))
        log.debug("CBLAS GEMMs bound from %s (%s)", blas.path, "ILP64" if ilp64 else "LP64")
        return found
    log.debug("no OpenBLAS with CBLAS GEMMs found; kernels keep their numpy paths")
    return found


def gemm_for(dtype: np.dtype[Any]) -> Gemm | None:
    """The bound GEMM for float32 or float64 (None: other dtypes, no such library, or disabled)."""
    global _bound
    if not ENABLED or dtype.kind != "f" or dtype.itemsize not in (4, 8) or not dtype.isnative:
        return None
    if _bound is None:
        with _lock:
            if _bound is None:
                _bound = _bind()
    return _bound["f" if dtype.itemsize == 4 else "d"]
