"""Utility and check ops: ThrowException, Assert, EnforceFinite, EnsureClipped, Print, ZeroGradient,
ScaleBlobs, WeightScale, Mod, PrependDim (+ MergeDim, its gradient), LengthsToShape, Bucketize, counters (CreateCounter,
CountUp, CountDown, CheckCounterDone, ResetCounter, RetrieveCount) and CreateMutex/AtomicFetchAdd."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.db.blobs import BlobCodec, register_blob_codec
from asyncnet.errors import ArgumentError
from asyncnet.fileaccess import file_op, writes
from asyncnet.iopolicy import op_write_path
from asyncnet.opinfo import OpInfo
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo, same_as_input
from asyncnet.serde import numpy_to_tensor, tensor_to_numpy
from asyncnet.training.gradients import GradientContext, GradientSpec, register_gradient

log = logging.getLogger(__name__)
INT64 = np.dtype(np.int64)


@register_op(
    "ThrowException",
    inputs=0,
    outputs=0,
    args=(Arg("message", "", "the error message"),),
    infer=lambda op, ins: [],
    doc="Fail with `message` (for testing error paths).",
)
def throw_exception(op: OpInfo) -> Callable[..., Any]:
    msg = op.str_arg("message")

    def run() -> tuple[()]:
        raise ArgumentError(f"{op.label()}: {msg or 'ThrowException'}")

    return run


@register_op(
    "Assert",
    outputs=0,
    args=(Arg("error_msg", "", "the message when the assertion fails"),),
    infer=lambda op, ins: [],
    doc="Fail unless every element of the (bool or integer) input is true / nonzero.",
    input_names=("X",),
)
def assert_op(op: OpInfo) -> Callable[..., Any]:
    msg = op.str_arg("error_msg")

    def run(x: Any) -> tuple[()]:
        a = np.asarray(x)
        if a.dtype.kind not in "biu":
            raise ArgumentError(f"{op.label()}: Assert takes a bool or integer tensor, got {a.dtype}")
        if not np.all(a):
            raise ArgumentError(f"{op.label()}: assertion failed" + (f": {msg}" if msg else f" for {a.tolist()}"))
        return ()

    return run


@register_op(
    "EnforceFinite",
    outputs=0,
    infer=lambda op, ins: [],
    doc="Fail when the input holds a NaN or an infinity.",
    input_names=("input",),
)
def enforce_finite(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any) -> tuple[()]:
        a = np.asarray(x)
        if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
            bad = int(a.size - np.count_nonzero(np.isfinite(a)))
            raise ArgumentError(f"{op.label()}: input '{op.inputs[0]}' holds {bad} non-finite value(s)")
        return ()

    return run


@register_op(
    "EnsureClipped",
    inputs=(1, 3),
    allow_inplace=[(0, 0)],
    args=(Arg("min", float("-inf"), "lower bound"), Arg("max", float("inf"), "upper bound")),
    infer=lambda op, ins: [ins[0]],
    doc="Clip param to [min, max]; with inputs indices and grad only the rows param[indices] are clipped.",
    input_names=("param", "indices", "grad"),
    output_names=("output_param",),
)
def ensure_clipped(op: OpInfo) -> Callable[..., Any]:
    lo, hi = op.float_arg("min"), op.float_arg("max")
    if len(op.inputs) == 2:
        raise ArgumentError(f"{op.label()}: give param alone or param, indices and grad")

    def run(param: Any, indices: Any = None, grad: Any = None) -> tuple[np.ndarray]:
        p = np.asarray(param)
        if indices is None:
            return (np.clip(p, lo, hi).astype(p.dtype, copy=False),)
        out = p.copy()
        ii = np.asarray(indices).reshape(-1).astype(np.int64)
        if p.ndim == 0 or np.any(ii < 0) or np.any(ii >= p.shape[0]):
            raise ArgumentError(f"{op.label()}: indices must lie in [0, {p.shape[0] if p.ndim else 0})")
        out[ii] = np.clip(out[ii], lo, hi)
        return (out,)

    return run


@register_op(
    "Print",
    outputs=0,
    args=(
        Arg("to_file", 0, "append to '<blob name>.log' (through the workspace's I/O policy) instead of the log"),
        Arg("limit", 0, "print at most this many values (0: all)"),
        Arg("every_n", 1, "print on every n-th run only"),
    ),
    infer=lambda op, ins: [],
    doc="Log the input's name, shape and values (or append them to a file).",
    input_names=("input",),
)
def print_op(op: OpInfo) -> Callable[..., Any]:
    limit, every = op.int_arg("limit"), max(op.int_arg("every_n"), 1)
    to_file = op.bool_arg("to_file")
    path = op_write_path(op, f"{op.inputs[0]}.log") if to_file else None
    state = {"n": 0}
    lock = threading.Lock()

    def run(x: Any) -> tuple[()]:
        with lock:
            state["n"] += 1
            if (state["n"] - 1) % every:
                return ()
        a = np.asarray(x)
        flat = a.reshape(-1).tolist()
        shown = flat[:limit] if limit > 0 else flat
        text = f"{op.inputs[0]} {list(a.shape)} {a.dtype}: " + ",".join(map(str, shown))
        if path is None:
            log.info("%s", text)
        else:
            with open(path, "a", encoding="utf-8") as f:
                f.write(text + "\n")
        return ()

    return run


def _print_log_files(op: pb.OperatorDef) -> list[str]:
    to_file = any(a.name == "to_file" and a.HasField("i") and a.i != 0 for a in op.arg)
    return [f"{op.input[0]}.log"] if to_file and op.input else []


file_op("Print", writes("to_file", derive=_print_log_files))


@register_op(
    "ZeroGradient",
    outputs=0,
    infer=lambda op, ins: [],
    doc="Does nothing forward; its gradient is zeros shaped like the input (so a dangling blob gets one).",
    input_names=("input",),
)
def zero_gradient(op: OpInfo) -> Callable[..., Any]:
    return lambda x: ()


@register_gradient("ZeroGradient", copy_arguments=False)
def _zero_gradient_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("ConstantFill", [g.I(0)], [g.GI(0)], {"value": 0.0})])


@register_op(
    "ScaleBlobs",
    inputs=(1, -1),
    outputs=(1, -1),
    allow_inplace=lambda i, o: i == o,
    arity=lambda i, o: i == o,
    arity_doc="as many outputs as inputs",
    args=(Arg("scale", 1.0, "the factor"),),
    infer=lambda op, ins: list(ins),
    doc="Output k = input k * scale, for every input.",
)
def scale_blobs(op: OpInfo) -> Callable[..., Any]:
    s = op.float_arg("scale")

    def run(*xs: Any) -> list[np.ndarray]:
        out = []
        for x in xs:
            a = np.asarray(x)
            out.append((a * s).astype(a.dtype, copy=False))
        return out

    return run


@register_op(
    "WeightScale",
    inputs=2,
    allow_inplace=[(0, 0)],
    args=(
        Arg("stepsize", 1, "scale on iterations divisible by this"),
        Arg("upper_bound_iter", 1, "never scale from this iteration on"),
        Arg("scale", 1.0, "the factor"),
    ),
    infer=lambda op, ins: [ins[0]],
    doc="Inputs w, iter: w * scale when iter % stepsize == 0 and iter < upper_bound_iter, else w unchanged.",
    input_names=("w", "iter"),
    output_names=("nw",),
)
def weight_scale(op: OpInfo) -> Callable[..., Any]:
    step, upper, s = op.int_arg("stepsize"), op.int_arg("upper_bound_iter"), op.float_arg("scale")
    if step <= 0:
        raise ArgumentError(f"{op.label()}: stepsize must be positive, got {step}")

    def run(w: Any, it: Any) -> tuple[np.ndarray]:
        a = np.asarray(w)
        i = int(np.asarray(it).reshape(-1)[0])
        if i % step != 0 or i >= upper:
            return (a.copy(),)
        return ((a * s).astype(a.dtype, copy=False),)

    return run


@register_op(
    "Mod",
    allow_inplace=[(0, 0)],
    args=(
        Arg("divisor", 0, "the (nonzero) divisor"),
        Arg("sign_follow_divisor", 0, "the result takes the divisor's sign (Python) instead of the dividend's (C)"),
    ),
    infer=same_as_input(),
    doc="Elementwise remainder of an integer tensor by `divisor`.",
    input_names=("data",),
    output_names=("output",),
)
def mod(op: OpInfo) -> Callable[..., Any]:
    d = op.int_arg("divisor")
    if d == 0:
        raise ArgumentError(f"{op.label()}: divisor must be nonzero")
    follow = op.bool_arg("sign_follow_divisor")

    def run(x: Any) -> tuple[np.ndarray]:
        a = np.asarray(x)
        if a.dtype.kind not in "iu":
            raise ArgumentError(f"{op.label()}: data must be integers, got {a.dtype}")
        r = np.mod(a, d) if follow else np.fmod(a, d)
        return (r.astype(a.dtype, copy=False),)

    return run


@register_op(
    "PrependDim",
    allow_inplace=[(0, 0)],
    args=(Arg("dim_size", 0, "the new first dim (must divide the old first dim)"),),
    infer=lambda op, ins: [
        TensorInfo(
            None
            if ins[0].shape is None or not ins[0].shape or ins[0].shape[0] is None
            else (op.int_arg("dim_size"), ins[0].shape[0] // max(op.int_arg("dim_size"), 1), *ins[0].shape[1:]),
            ins[0].dtype,
        )
    ],
    doc="Reshape (d0, ...) to (dim_size, d0 / dim_size, ...).",
    input_names=("data",),
    output_names=("reshaped",),
)
def prepend_dim(op: OpInfo) -> Callable[..., Any]:
    n = op.int_arg("dim_size")
    if n <= 0:
        raise ArgumentError(f"{op.label()}: dim_size must be positive, got {n}")

    def run(x: Any) -> tuple[np.ndarray]:
        a = np.asarray(x)
        if a.ndim == 0 or a.shape[0] % n:
            raise ArgumentError(f"{op.label()}: dim_size {n} must divide the first dim of {a.shape}")
        return (a.reshape((n, a.shape[0] // n) + a.shape[1:]),)

    return run


@register_gradient("PrependDim")
def _prepend_dim_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("MergeDim", [g.GO(0)], [g.GI(0)])])


@register_op(
    "MergeDim",
    allow_inplace=[(0, 0)],
    infer=lambda op, ins: [
        TensorInfo(
            None
            if ins[0].shape is None or len(ins[0].shape) < 2 or None in ins[0].shape[:2]
            else (ins[0].shape[0] * ins[0].shape[1], *ins[0].shape[2:]),  # type: ignore[operator]
            ins[0].dtype,
        )
    ],
    doc="Merge the first two dims: (d0, d1, ...) -> (d0 * d1, ...) (the gradient of PrependDim).",
    input_names=("data",),
    output_names=("reshaped",),
)
def merge_dim(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any) -> tuple[np.ndarray]:
        a = np.asarray(x)
        if a.ndim < 2:
            raise ArgumentError(f"{op.label()}: data must have rank >= 2, got {a.shape}")
        return (a.reshape((a.shape[0] * a.shape[1],) + a.shape[2:]),)

    return run


@register_op(
    "LengthsToShape",
    infer=lambda op, ins: [TensorInfo((2,), np.dtype(np.int32))],
    doc="For N equal lengths L: the shape [N, L] of the matrix they make (int32).",
    input_names=("lengths",),
    output_names=("shape",),
)
def lengths_to_shape(op: OpInfo) -> Callable[..., Any]:
    def run(lengths: Any) -> tuple[np.ndarray]:
        ln = np.asarray(lengths).reshape(-1)
        if ln.size and np.any(ln != ln[0]):
            raise ArgumentError(f"{op.label()}: all lengths must be equal, got {ln.tolist()}")
        return (np.array([ln.size, int(ln[0]) if ln.size else 0], np.int32),)

    return run


@register_op(
    "Bucketize",
    args=(Arg("boundaries", [], "sorted bucket boundaries"),),
    infer=lambda op, ins: [TensorInfo(ins[0].shape, np.dtype(np.int32))],
    doc="Bucket of each value: the number of boundaries strictly below it (x <= b[0] gives 0).",
    input_names=("data",),
    output_names=("output",),
)
def bucketize(op: OpInfo) -> Callable[..., Any]:
    b = np.asarray(op.floats_arg("boundaries"), np.float64)
    if np.any(np.diff(b) < 0):
        raise ArgumentError(f"{op.label()}: boundaries must be sorted, got {b.tolist()}")
    return lambda x: (np.searchsorted(b, np.asarray(x, np.float64), side="left").astype(np.int32),)


# -- counters and mutexes --------------------------------------------------------------------------


class Counter:
    """Caffe2's Counter<int64>: a thread-safe countdown."""

    def __init__(self, init: int) -> None:
        self.init = init
        self.count = init
        self.lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Counter({self.count})"


def _encode_counter(c: Counter, proto: pb.BlobProto) -> None:
    # Caffe2's CounterSerializer: the current count as a one-element int64 tensor.
    with c.lock:
        value = c.count
    proto.tensor.CopyFrom(numpy_to_tensor(np.array([value], np.int64)))


def _decode_counter(proto: pb.BlobProto) -> Counter:
    value = tensor_to_numpy(proto.tensor).reshape(-1)
    if value.size != 1:
        raise ArgumentError(f"a saved counter holds one value, got {value.size}")
    return Counter(int(value[0]))


register_blob_codec(BlobCodec(Counter, "std::unique_ptr<Counter<int64_t>>", _encode_counter, _decode_counter))


def _counter(op: OpInfo, v: Any) -> Counter:
    if not isinstance(v, Counter):
        raise ArgumentError(f"{op.label()}: input 0 must be a counter (from CreateCounter), got {type(v).__name__}")
    return v


@register_op(
    "CreateCounter",
    inputs=0,
    args=(Arg("init_count", 0, "the starting count"),),
    infer=lambda op, ins: [TensorInfo(None, None)],
    doc="Create a counter blob starting at init_count.",
    output_names=("counter",),
)
def create_counter(op: OpInfo) -> Callable[..., Any]:
    init = op.int_arg("init_count")
    if init < 0:
        raise ArgumentError(f"{op.label()}: init_count must be nonnegative, got {init}")
    return lambda: (Counter(init),)


def _counter_op(
    name: str, doc: str, fn: Callable[[Counter, OpInfo], Any], out: str = "", args: tuple[Arg, ...] = ()
) -> None:
    def factory(op: OpInfo) -> Callable[..., Any]:
        def run(c: Any) -> tuple[Any, ...]:
            counter = _counter(op, c)
            with counter.lock:
                value = fn(counter, op)
            return () if value is None else (value,)

        return run

    out_type = np.dtype(np.bool_) if out == "done" else INT64
    register_op(
        name,
        outputs=(0, 1) if not out else 1,
        args=args,
        infer=lambda op, ins: [TensorInfo((), out_type)][: len(op.outputs)],
        doc=doc,
        input_names=("counter",),
        output_names=(out or "previous_count",),
    )(factory)


def _up(c: Counter, op: OpInfo) -> np.ndarray:
    c.count += 1
    return np.array(c.count - 1, np.int64)


def _down(c: Counter, op: OpInfo) -> np.ndarray:
    # Caffe2's Counter::countDown: always decrement; "done" when the count was already <= 0.
    prev = c.count
    c.count -= 1
    return np.array(prev <= 0)


def _reset(c: Counter, op: OpInfo) -> np.ndarray:
    # The op's own init_count (default 0), not the counter's creation value.
    prev, c.count = c.count, op.int_arg("init_count")
    return np.array(prev, np.int64)


_counter_op("CountUp", "Increase the counter by 1; output the count before.", _up)
_counter_op(
    "CountDown",
    "Decrease the counter by 1; output (bool) whether it was already <= 0 before (false while it was positive).",
    _down,
    "done",
)
_counter_op("CheckCounterDone", "Whether the counter is <= 0 (bool).", lambda c, op: np.array(c.count <= 0), "done")
_counter_op(
    "ResetCounter",
    "Set the counter to the init_count argument (default 0); optional output: the count before.",
    _reset,
    args=(Arg("init_count", 0, "the new count"),),
)
_counter_op("RetrieveCount", "The counter's current count (int64).", lambda c, op: np.array(c.count, np.int64), "count")


class Mutex:
    """A lock held in a blob (CreateMutex)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def __repr__(self) -> str:
        return "Mutex()"


@register_op(
    "CreateMutex",
    inputs=0,
    infer=lambda op, ins: [TensorInfo(None, None)],
    doc="Create a mutex blob (for AtomicFetchAdd).",
    output_names=("mutex",),
)
def create_mutex(op: OpInfo) -> Callable[..., Any]:
    return lambda: (Mutex(),)


@register_op(
    "AtomicFetchAdd",
    inputs=3,
    outputs=2,
    allow_inplace=[(1, 0)],
    infer=lambda op, ins: [ins[1], ins[1]],
    doc="Under the mutex (input 0): output 0 = a + b (usually written over a, input 1), output 1 = a before "
    "the add, for integer scalars a and b (input 2). AtomicFetchAdd64 is the int64 spelling.",
    input_names=("mutex", "mut_value", "increment"),
    output_names=("mut_value", "fetched_value"),
    aliases=("AtomicFetchAdd64",),
)
def atomic_fetch_add(op: OpInfo) -> Callable[..., Any]:
    def run(m: Any, a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(m, Mutex):
            raise ArgumentError(f"{op.label()}: input 0 must be a mutex (from CreateMutex)")
        with m.lock:
            av, bv = np.asarray(a), np.asarray(b)
            return (av + bv).astype(av.dtype), av.copy()

    return run
