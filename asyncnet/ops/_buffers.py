"""Output buffers that kernels reuse across runs when nobody else can see them.

Caffe2 tensors kept their capacity between runs, so a steady-state net allocated nothing.
numpy kernels return fresh arrays, which for large outputs costs an allocation and page
faults per run. :class:`OutputBuffer` keeps the array an op returned last time and hands it
back for the next run only when overwriting it is invisible to everyone:

* nothing but the buffer itself references the array (the blob it went to was overwritten
  since, e.g. by a later in-place op), or
* exactly one other reference exists and it is the op's own output cell, which the op is
  about to overwrite anyway.

A value the user fetched, a view taken by a later op (a view references its base), a second
blob holding the same array, a tracer keeping intermediate values: each adds a reference, and
the buffer then allocates a fresh array instead. Reference counts come from
``sys.getrefcount``; the count that means "alone" is measured at import, so interpreter
changes in how locals are counted cannot make the check unsafe (they can only disable reuse).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from asyncnet.opinfo import OpInfo

# Reuse is on by default; bench/bench_ops.py flips it to measure what it saves.
ENABLED = True
# Only arrays this large are kept. glibc serves smaller blocks from memory it kept from the
# previous run (its mmap threshold adapts up to 32 MiB): measured, steady-state runs of
# ResNet-50 and MobileNet at batch 1 take 0 page faults per run with or without reuse, and
# timing shows no difference. Above 32 MiB every fresh array is a new mmap: a 34 MiB Relu
# output took 529 page faults and 11.3 ms per run fresh, 0 and 3.4 ms reused.
MIN_BYTES = 32 << 20


class OutputBuffer:
    """One reusable output array of an operator (see the module docstring for the safety rule)."""

    __slots__ = ("_arr", "_cell")

    def __init__(self, cell: Any = None) -> None:
        self._arr: np.ndarray | None = None
        # The op's output cell (asyncnet.net.Blob), or None when the op runs outside a workspace.
        self._cell = cell

    @classmethod
    def for_output(cls, op: OpInfo, index: int = 0) -> OutputBuffer:
        """The buffer of output ``index`` of ``op``, bound to its cell in the op's workspace."""
        cell = None
        if op.workspace is not None and index < len(op.outputs) and op.outputs[index] not in op.inputs:
            cell = op.workspace.cell(op.outputs[index])
        return cls(cell)

    def take(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        """An array of ``shape`` and ``dtype`` that the caller may overwrite completely and return."""
        arr = self._arr
        if arr is not None and arr.shape == shape and arr.dtype == dtype:
            refs = sys.getrefcount(arr)
            if refs == _ALONE or (refs == _ALONE + 1 and self._cell is not None and self._cell.value is arr):
                return arr
        arr = np.empty(shape, dtype)
        if ENABLED and arr.nbytes >= MIN_BYTES:
            self._arr = arr
        else:
            self._arr = None
        return arr


def _calibrate() -> int:
    """The reference count ``take`` sees for an array held only by the buffer."""
    probe = OutputBuffer()
    probe._arr = np.empty(1)
    arr = probe._arr
    del arr
    return _count(probe)


def _count(buf: OutputBuffer) -> int:
    # Mirrors ``take``: a local bound from the slot, then getrefcount of that local.
    arr = buf._arr
    return sys.getrefcount(arr)


_ALONE = _calibrate()
