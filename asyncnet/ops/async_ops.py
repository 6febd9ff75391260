"""Asynchronous operators: their kernels return a Future and hold no worker thread while pending.

``AsyncWait`` completes after a timer (the process-wide timer thread), ``AsyncReadFile``
reads a file on the shared I/O pool. Executors run the children of such an op when
its future completes.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.executors.pools import shared_io, timer_future
from asyncnet.fileaccess import file_op, reads
from asyncnet.iopolicy import op_read_path
from asyncnet.opinfo import OpInfo
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo


def _wait_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    return list(ins[: len(op.outputs)])


@register_op(
    "AsyncWait",
    inputs=(0, -1),
    outputs=(0, -1),
    allow_inplace=lambda i, o: i == o,
    arity=lambda n_in, n_out: n_out <= n_in,
    arity_doc="at most as many outputs as inputs",
    args=(Arg("ms", 0.0, "milliseconds to wait before completing"),),
    infer=_wait_infer,
    is_async=True,
    doc="Completes `ms` milliseconds after it starts, without holding a thread; output i is input i.",
)
def async_wait(op: OpInfo) -> Callable[..., Any]:
    ms = op.float_arg("ms")
    if not ms >= 0:
        raise ArgumentError(f"{op.label()}: argument 'ms' must be >= 0, got {ms}")
    delay = ms / 1000.0
    n_out = len(op.outputs)

    def run(*xs: Any) -> Future[Any]:
        return timer_future(delay, xs[:n_out])

    return run


_DTYPES = {"uint8": np.uint8, "int8": np.int8, "float": np.float32, "float32": np.float32, "int32": np.int32}


@register_op(
    "AsyncReadFile",
    inputs=0,
    outputs=1,
    args=(
        Arg("path", None, "file to read (required)"),
        Arg("dtype", "uint8", f"element type of the output: {', '.join(_DTYPES)}"),
    ),
    infer=lambda op, ins: [TensorInfo((None,), np.dtype(_DTYPES.get(str(op.arg("dtype")), np.uint8)))],
    is_async=True,
    doc="Reads a whole file on the shared I/O pool; output is a 1-D array of its bytes viewed as `dtype`.",
)
def async_read_file(op: OpInfo) -> Callable[..., Any]:
    if not op.has("path"):
        raise ArgumentError(f"{op.label()}: required argument 'path' is missing")
    path = Path(op_read_path(op, op.str_arg("path")))
    dtype_name = op.str_arg("dtype")
    if dtype_name not in _DTYPES:
        raise ArgumentError(f"{op.label()}: argument 'dtype' must be one of {', '.join(_DTYPES)}, got '{dtype_name}'")
    dtype = np.dtype(_DTYPES[dtype_name])

    def read() -> tuple[np.ndarray]:
        data = path.read_bytes()
        if len(data) % dtype.itemsize:
            raise ArgumentError(f"{path}: {len(data)} bytes is not a whole number of {dtype_name} values")
        return (np.frombuffer(data, dtype=dtype).copy(),)

    def run() -> Future[Any]:
        return shared_io().submit(read)

    return run


file_op("AsyncReadFile", reads("path"))
