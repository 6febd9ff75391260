"""Collectors that keep rows across runs: LastNWindowCollector (a ring buffer of the last N rows) and
CollectTensor (reservoir sampling of whole tensors into tensor vectors)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError, TensorError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import info, rng_for
from asyncnet.ops.data_pipeline import TensorVector
from asyncnet.ops.utility_extra import Mutex
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo


def _positive(op: OpInfo, name: str) -> int:
    n = op.int_arg(name)
    if n <= 0:
        raise ArgumentError(f"{op.label()}: {name} must be positive, got {n}")
    return n


def ring_append(buf: np.ndarray | None, nxt: int, data: np.ndarray, cap: int) -> tuple[np.ndarray, int]:
    """Write ``data``'s rows into a ring buffer of at most ``cap`` rows at ``nxt``; (buffer, next)."""
    n = data.shape[0]
    cur = 0 if buf is None else buf.shape[0]
    if n > cap:
        # Only the last cap rows survive.
        return data[n - cap :].copy(), 0
    out = np.empty((min(cap, cur + n),) + data.shape[1:], data.dtype)
    if buf is not None:
        out[:cur] = buf
    first = min(n + nxt, cap) - nxt
    out[nxt : nxt + first] = data[:first]
    out[: n - first] = data[first:]
    return out, (nxt + n) % cap


def _last_n_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    d = ins[2].shape
    outs = [info(None if d is None else (op.int_arg("num_to_collect"), *d[1:]), ins[2].dtype), info((), np.int32)]
    return (outs + [info((), np.int64)])[: len(op.outputs)]


@register_op(
    "LastNWindowCollector",
    inputs=(3, 5),
    outputs=(2, 3),
    enforce_inplace=[(0, 0), (1, 1), (4, 2)],
    args=(Arg("num_to_collect", -1, "rows kept (required, > 0)"),),
    infer=_last_n_infer,
    doc="Keep the last num_to_collect rows seen across runs: the rows of DATA are written into the buffer "
    "(input/output 0, empty at first) at the cursor NEXT (input/output 1, an int32 scalar), wrapping "
    "around; a DATA with more rows than the buffer keeps only its last rows. Optional MUTEX (input 3) "
    "serializes concurrent collectors; NUM_VISITED (input 4 / output 2) counts every row seen.",
    input_names=("last_n", "next", "DATA", "MUTEX", "NUM_VISITED"),
    output_names=("last_n", "next", "NUM_VISITED"),
)
def last_n_window_collector(op: OpInfo) -> Callable[..., Any]:
    cap = _positive(op, "num_to_collect")
    count = len(op.outputs) > 2

    def collect(buf: Any, nxt: Any, data: Any, visited: Any) -> tuple[Any, ...]:
        d = np.asarray(data)
        if d.ndim < 1:
            raise TensorError(f"{op.label()}: DATA must have at least one dim, got a scalar")
        old = buf if isinstance(buf, np.ndarray) and buf.size > 0 else None
        if old is not None and (old.ndim != d.ndim or old.shape[1:] != d.shape[1:]):
            raise TensorError(f"{op.label()}: DATA rows {d.shape[1:]} do not match the buffer's {old.shape[1:]}")
        seen = np.array((int(np.asarray(visited)) if old is not None and visited is not None else 0) + d.shape[0])
        tail = (seen.astype(np.int64),) if count else ()
        if d.shape[0] == 0:
            return (d.copy() if old is None else old, nxt, *tail)
        cursor = 0 if old is None else int(np.asarray(nxt))
        size = min(cap, (0 if old is None else old.shape[0]) + min(d.shape[0], cap))
        if not 0 <= cursor < size:
            raise TensorError(f"{op.label()}: cursor {cursor} outside the buffer of {size} rows")
        out, cursor = ring_append(old, cursor, d, cap)
        return (out, np.array(cursor, np.int32), *tail)

    def run(buf: Any, nxt: Any, data: Any, mutex: Any = None, visited: Any = None) -> tuple[Any, ...]:
        if mutex is None:
            return collect(buf, nxt, data, visited)
        if not isinstance(mutex, Mutex):
            raise ArgumentError(f"{op.label()}: input 3 must be a mutex (from CreateMutex)")
        with mutex.lock:
            return collect(buf, nxt, data, visited)

    return run


@register_op(
    "CollectTensor",
    inputs=(2, -1),
    outputs=(1, -1),
    arity=lambda i, o: i == 2 * o,
    arity_doc="k tensor vectors then k tensors; k outputs",
    allow_inplace=lambda i, o: i == o,
    args=(Arg("num_to_collect", -1, "tensors kept per vector (required, > 0)"),),
    infer=lambda op, ins: [TensorInfo(None, None)] * len(op.outputs),
    doc="Reservoir sampling across runs into the tensor vectors (written in place): run t keeps the k input tensors (all or none, at the same index of "
    "each tensor vector) with probability num_to_collect / (t + 1); the first num_to_collect runs append.",
)
def collect_tensor(op: OpInfo) -> Callable[..., Any]:
    cap = _positive(op, "num_to_collect")
    k = len(op.outputs)
    if list(op.inputs[:k]) != list(op.outputs):
        raise ArgumentError(f"{op.label()}: outputs must be the tensor vectors (inputs 0..{k - 1}), in place")
    rng = rng_for(op)
    visited = [0]

    def run(*ins: Any) -> tuple[Any, ...]:
        vectors, tensors = ins[:k], ins[k:]
        for v in vectors:
            if not isinstance(v, TensorVector):
                raise ArgumentError(f"{op.label()}: inputs 0..{k - 1} must be tensor vectors, got {type(v).__name__}")
        n = visited[0]
        pos = n if n < cap else int(rng.integers(0, n + 1))
        if pos < cap:
            for v, t in zip(vectors, tensors):
                if pos >= len(v):
                    v.append(np.array(t, copy=True))
                else:
                    v[pos] = np.array(t, copy=True)
        visited[0] = n + 1
        return tuple(vectors)

    return run
