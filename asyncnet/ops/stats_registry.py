"""Caffe2's stat registry: named int64 counters, a process-wide registry (as Caffe2's global one) or
registries held in blobs, and the ops that feed it: StatRegistryCreate/Update/Export and the Put ops
(AveragePut, IncrementPut, StdDevPut) that record a scalar, scaled by `magnitude_expand`, as int64."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError, TensorError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import info
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo

I64_MAX, I64_MIN = np.iinfo(np.int64).max, np.iinfo(np.int64).min


def _wrap(v: int) -> int:
    """int64 wrap-around, as Caffe2's atomic counters."""
    return (v - I64_MIN) % (1 << 64) + I64_MIN


class StatRegistry:
    """Named int64 counters (thread-safe)."""

    def __init__(self) -> None:
        self._values: dict[str, int] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"StatRegistry({len(self._values)} stats)"

    def add(self, key: str, delta: int) -> None:
        with self._lock:
            self._values[key] = _wrap(self._values.get(key, 0) + delta)

    def export(self, reset: bool) -> list[tuple[str, int]]:
        """Every (key, value), sorted by key; with ``reset`` the values restart from 0."""
        with self._lock:
            out = sorted(self._values.items())
            if reset:
                self._values = dict.fromkeys(self._values, 0)
        return out


GLOBAL_REGISTRY = StatRegistry()


def _registry(op: OpInfo, v: Any) -> StatRegistry:
    if v is None:
        return GLOBAL_REGISTRY
    if not isinstance(v, StatRegistry):
        raise ArgumentError(
            f"{op.label()}: the registry input must come from StatRegistryCreate, got {type(v).__name__}"
        )
    return v


@register_op(
    "StatRegistryCreate",
    inputs=0,
    infer=lambda op, ins: [TensorInfo(None, None)],
    doc="Create a new, empty stat registry blob (the Put ops and the registry ops default to the global one).",
    output_names=("handle",),
)
def stat_registry_create(op: OpInfo) -> Callable[..., Any]:
    return lambda: (StatRegistry(),)


def _keys(op: OpInfo, keys: Any) -> list[str]:
    out = []
    for k in np.asarray(keys).reshape(-1).tolist():
        out.append(k.decode("utf-8", "surrogateescape") if isinstance(k, bytes) else str(k))
    return out


@register_op(
    "StatRegistryUpdate",
    inputs=(2, 3),
    outputs=0,
    infer=lambda op, ins: [],
    doc="Add VALUES (int64) to the counters named by KEYS in the registry (input 2, default the global one), "
    "creating missing counters.",
    input_names=("keys", "values", "handle"),
)
def stat_registry_update(op: OpInfo) -> Callable[..., Any]:
    def run(keys: Any, values: Any, reg: Any = None) -> tuple[()]:
        names = _keys(op, keys)
        vals = np.asarray(values).reshape(-1)
        if len(names) != vals.size:
            raise TensorError(f"{op.label()}: {len(names)} keys but {vals.size} values")
        r = _registry(op, reg)
        for k, v in zip(names, vals.tolist()):
            r.add(k, int(v))
        return ()

    return run


@register_op(
    "StatRegistryExport",
    inputs=(0, 1),
    outputs=3,
    args=(Arg("reset", 1, "reset every counter to 0 after exporting"),),
    infer=lambda op, ins: [info((None,), object), info((None,), np.int64), info((None,), np.int64)],
    doc="Export every counter of the registry (input 0, default the global one): keys (strings), values "
    "(int64) and timestamps (int64, ns since the epoch).",
    input_names=("handle",),
    output_names=("keys", "values", "timestamps"),
)
def stat_registry_export(op: OpInfo) -> Callable[..., Any]:
    reset = op.bool_arg("reset")

    def run(reg: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        items = _registry(op, reg).export(reset)
        now = time.time_ns()
        keys = np.array([k.encode("utf-8", "surrogateescape") for k, _ in items], dtype=object)
        return keys, np.array([v for _, v in items], np.int64), np.full(len(items), now, np.int64)

    return run


# -- Put ops -----------------------------------------------------------------------------------------


class _StdDev:
    """Caffe2's StdDevExportedStat: sums around the first value seen, for precision."""

    def __init__(self) -> None:
        self.first: int | None = None
        self.lock = threading.Lock()

    def record(self, reg: StatRegistry, name: str, v: int) -> None:
        with self.lock:
            if self.first is None:
                self.first = v
            d = v - self.first
        reg.add(f"{name}/count", 1)
        reg.add(f"{name}/sumsqoffset", _wrap(d * d))
        reg.add(f"{name}/sumoffset", d)
        reg.add(f"{name}/sum", v)


def _int_value(op: OpInfo, x: float, expand: int, bound: bool) -> int:
    limit = I64_MAX // expand
    if bound:
        if math.isnan(x):
            return 0
        if x <= -limit:
            return int(I64_MIN)
        if x >= limit:
            return int(I64_MAX)
        return int(x * expand)
    if math.isnan(x):
        raise TensorError(f"{op.label()}: the value is NaN")
    if not abs(x) < limit + 1 or abs(int(x)) >= limit:
        raise TensorError(f"{op.label()}: value {x} is too large for magnitude_expand {expand}")
    return int(x * expand)


_PUT_ARGS = (
    Arg("stat_name", "", "the stat's name (default: the input blob's name)"),
    Arg("magnitude_expand", 1, "scale the value by this before it is stored as int64"),
    Arg("bound", 0, "clamp to the int64 range (NaN -> 0) instead of failing"),
    Arg("default_value", 0.0, "used for an empty input (without it an empty input fails)"),
)


def _put(kind: str) -> Callable[[OpInfo], Callable[..., Any]]:
    def factory(op: OpInfo) -> Callable[..., Any]:
        name = (op.str_arg("stat_name") or op.inputs[0]) + "/stat_value"
        expand = op.int_arg("magnitude_expand")
        if expand <= 0:
            raise ArgumentError(f"{op.label()}: magnitude_expand must be positive, got {expand}")
        bound = op.bool_arg("bound")
        default = op.float_arg("default_value") if op.has("default_value") else None
        stddev = _StdDev()

        def run(value: Any) -> tuple[()]:
            a = np.asarray(value)
            if a.size:
                x = float(a.reshape(-1)[0])
            elif default is not None:
                x = float(np.float32(default))
            else:
                raise TensorError(f"{op.label()}: default_value must be given to accept an empty input ({name})")
            v = _int_value(op, x, expand, bound)
            if kind == "increment":
                GLOBAL_REGISTRY.add(name, v)
            elif kind == "average":
                GLOBAL_REGISTRY.add(f"{name}/count", 1)
                GLOBAL_REGISTRY.add(f"{name}/sum", v)
            else:
                stddev.record(GLOBAL_REGISTRY, name, v)
            return ()

        return run

    return factory


for _name, _kind, _what in (
    ("AveragePut", "average", "adds it to <stat_name>/stat_value/sum and 1 to .../count"),
    ("IncrementPut", "increment", "adds it to <stat_name>/stat_value"),
    ("StdDevPut", "stddev", "adds it to .../sum, 1 to .../count, and its offset from the first value (and its "
     "square) to .../sumoffset and .../sumsqoffset"),
):  # fmt: skip
    register_op(
        _name,
        outputs=0,
        args=_PUT_ARGS,
        infer=lambda op, ins: [],
        doc=f"Record the first value of the input, times magnitude_expand, as an int64 in the global stat registry: {_what}.",
        input_names=("value",),
    )(_put(_kind))
