"""Gradients of math ops: trigonometric/hyperbolic unaries, Negative, Scale, Mean, Max/Min, reductions, Slice,
Squeeze/ExpandDims, FlattenToVec."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import canonical_axis, register_single_gradient_op
from asyncnet.ops.slicing import slice_bounds
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo, same_as_input
from asyncnet.training.gradients import GradientContext, GradientSpec, register_gradient

Maker = Callable[[pb.OperatorDef, list[str | None]], GradientSpec]


def _maker(grad_type: str, order: Sequence[str]) -> Maker:
    """A one-op maker; ``order`` lists its inputs as "I0", "O0", "GO0"."""

    def maker(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
        g = GradientContext(op, g_out)
        pick = {"I": g.I, "O": g.O, "GO": g.GO}
        ins = [pick[s.rstrip("0123456789")](int(s.lstrip("IOG"))) for s in order]
        return g.spec([g.op_def(grad_type, ins, [g.GI(0)])])

    return maker


# -- elementwise unaries -------------------------------------------------------------------------

_UNARY: dict[str, tuple[tuple[str, ...], Callable[[np.ndarray, np.ndarray], np.ndarray], str]] = {
    # name: (gradient inputs in Caffe2's order, dX from (x, dy), doc)
    "Sinh": (("GO0", "I0"), lambda x, dy: dy * np.cosh(x), "dX = dY * cosh(X)"),
    "Cosh": (("GO0", "I0"), lambda x, dy: dy * np.sinh(x), "dX = dY * sinh(X)"),
    "Sin": (("I0", "GO0"), lambda x, dy: dy * np.cos(x), "dX = dY * cos(X)"),
    "Cos": (("I0", "GO0"), lambda x, dy: -dy * np.sin(x), "dX = -dY * sin(X)"),
    "Tan": (("I0", "GO0"), lambda x, dy: dy / np.cos(x) ** 2, "dX = dY / cos(X)^2"),
    "Asin": (("I0", "GO0"), lambda x, dy: dy / np.sqrt(1 - x * x), "dX = dY / sqrt(1 - X^2)"),
    "Acos": (("I0", "GO0"), lambda x, dy: -dy / np.sqrt(1 - x * x), "dX = -dY / sqrt(1 - X^2)"),
    "Atan": (("I0", "GO0"), lambda x, dy: dy / (1 + x * x), "dX = dY / (1 + X^2)"),
    "Abs": (("I0", "GO0"), lambda x, dy: dy * np.sign(x), "dX = dY * sign(X)"),
}


def _unary_factory(fn: Callable[[np.ndarray, np.ndarray], np.ndarray], x_first: bool) -> Callable[[OpInfo], Any]:
    def factory(op: OpInfo) -> Callable[..., Any]:
        def run(a: Any, b: Any) -> tuple[np.ndarray]:
            x, dy = (np.asarray(a), np.asarray(b)) if x_first else (np.asarray(b), np.asarray(a))
            if x.shape != dy.shape:
                raise ArgumentError(f"X {x.shape} and dY {dy.shape} must have one shape")
            return (np.asarray(fn(x, dy)).astype(dy.dtype, copy=False),)

        return run

    return factory


for _name, (_order, _fn, _doc) in _UNARY.items():
    register_gradient(_name)(_maker(f"{_name}Gradient", _order))
    _x_first = _order[0] == "I0"
    register_op(
        f"{_name}Gradient",
        inputs=2,
        outputs=1,
        infer=same_as_input(0),
        doc=f"Gradient of {_name}: {_doc}.",
        input_names=("X", "dY") if _x_first else ("dY", "X"),
        output_names=("dX",),
    )(_unary_factory(_fn, _x_first))


def _same_op_maker(grad_type: str) -> Maker:
    # Linear ops: the gradient is the same op (arguments copied) applied to dY.
    def maker(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
        g = GradientContext(op, g_out)
        return g.spec([g.op_def(grad_type, [g.GO(0)], [g.GI(0)])])

    return maker


register_gradient("Negative")(_same_op_maker("Negative"))
register_gradient("Scale")(_same_op_maker("Scale"))
register_gradient("Squeeze")(_same_op_maker("ExpandDims"))
register_gradient("ExpandDims")(_same_op_maker("Squeeze"))


@register_gradient("Exp")
def _exp_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("Mul", [g.O(0), g.GO(0)], [g.GI(0)])])


@register_gradient("Log")
def _log_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("Div", [g.GO(0), g.I(0)], [g.GI(0)])])


@register_gradient("Sqr", copy_arguments=False)
def _sqr_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    # Caffe2 scales GO in place first; scaling into GI instead leaves a shared GO intact.
    g = GradientContext(op, g_out)
    gi = g.GI(0)
    return g.spec([g.op_def("Scale", [g.GO(0)], [gi], {"scale": 2.0}), g.op_def("Mul", [gi, g.I(0)], [gi])])


@register_gradient("Sqrt", copy_arguments=False)
def _sqrt_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    gi = g.GI(0)
    return g.spec([g.op_def("Scale", [g.GO(0)], [gi], {"scale": 0.5}), g.op_def("Div", [gi, g.O(0)], [gi])])


@register_gradient("FlattenToVec", copy_arguments=False)
def _flatten_to_vec_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("ResizeLike", [g.GO(0), g.I(0)], [g.GI(0)])])


# -- n-ary Mean / Max / Min ----------------------------------------------------------------------


@register_gradient("Mean")
def _mean_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("MeanGradient", [g.GO(0)], [g.GI(i) for i in range(len(op.input))])])


@register_op(
    "MeanGradient",
    inputs=1,
    outputs=(1, -1),
    allow_inplace=True,
    infer=lambda op, ins: [ins[0]] * len(op.outputs),
    doc="Gradient of Mean over n inputs: every dX_i = dY / n.",
)
def mean_gradient(op: OpInfo) -> Callable[..., Any]:
    n = len(op.outputs)

    def run(dy: Any) -> list[np.ndarray]:
        dy = np.asarray(dy)
        g = (dy / n).astype(dy.dtype, copy=False)
        return [g.copy() for _ in range(n)]

    return run


def _select_maker(grad_type: str) -> Maker:
    def maker(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
        g = GradientContext(op, g_out)
        ins = [g.O(0), g.GO(0), *(g.I(i) for i in range(len(op.input)))]
        return g.spec([g.op_def(grad_type, ins, [g.GI(i) for i in range(len(op.input))])])

    return maker


def _select_factory(op: OpInfo) -> Callable[..., Any]:
    def run(y: Any, dy: Any, *xs: Any) -> list[np.ndarray]:
        y, dy = np.asarray(y), np.asarray(dy)
        # Every input equal to the selected value gets the gradient, ties included (as Caffe2).
        return [np.where(np.asarray(x) == y, dy, 0).astype(dy.dtype, copy=False) for x in xs]

    return run


for _name in ("Max", "Min"):
    register_gradient(_name)(_select_maker(f"{_name}Gradient"))
    register_op(
        f"{_name}Gradient",
        inputs=(3, -1),
        outputs=(1, -1),
        arity=lambda i, o: o == i - 2,
        arity_doc="one output per forward input",
        infer=lambda op, ins: [TensorInfo(t.shape, ins[1].dtype) for t in ins[2:]],
        doc=f"Gradient of {_name}: inputs Y, dY, X_0, ...; dX_i = dY where X_i == Y.",
    )(_select_factory)


# -- reductions -----------------------------------------------------------------------------------


def _axes(op: OpInfo, ndim: int) -> tuple[int, ...]:
    raw = op.ints_arg("axes") if op.has("axes") else []
    if not raw:
        return tuple(range(ndim))
    return tuple(sorted({canonical_axis(a, ndim, op, "axes") for a in raw}))


def _expand_back(dy: np.ndarray, x_shape: tuple[int, ...], axes: tuple[int, ...]) -> np.ndarray:
    """dY (reduced, with or without kept dims) reshaped so that it broadcasts against X."""
    kept = tuple(1 if i in axes else d for i, d in enumerate(x_shape))
    return dy.reshape(kept)


def _register_reduce_gradient(kind: str, factory: Callable[[OpInfo], Callable[..., Any]], doc: str) -> None:
    """Register Reduce<kind>'s gradient maker and its Reduce<kind>Gradient op (inputs dY, X, Y; output dX)."""
    register_gradient(f"Reduce{kind}")(_maker(f"Reduce{kind}Gradient", ("GO0", "I0", "O0")))
    register_op(
        f"Reduce{kind}Gradient",
        inputs=3,
        outputs=1,
        args=(Arg("axes", [], "the forward axes"), Arg("keepdims", 1, "the forward keepdims")),
        infer=lambda op, ins: [TensorInfo(ins[1].shape, ins[0].dtype)],
        doc=doc,
        input_names=("dY", "X", "Y"),
        output_names=("dX",),
    )(factory)


for _kind in ("Sum", "Mean", "Max", "Min"):

    def _reduce_factory(op: OpInfo, kind: str = _kind) -> Callable[..., Any]:
        def run(dy: Any, x: Any, y: Any) -> tuple[np.ndarray]:
            dy, x, y = np.asarray(dy), np.asarray(x), np.asarray(y)
            axes = _axes(op, x.ndim)
            d = _expand_back(dy, x.shape, axes)
            if kind == "Sum":
                dx = np.broadcast_to(d, x.shape)
            elif kind == "Mean":
                count = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
                dx = np.broadcast_to(d / max(count, 1), x.shape)
            else:
                dx = np.where(x == _expand_back(y, x.shape, axes), d, 0)
            return (np.array(dx, dtype=dy.dtype),)

        return run

    _register_reduce_gradient(
        _kind,
        _reduce_factory,
        f"Gradient of Reduce{_kind}: inputs dY, X, Y; output dX"
        + (" (positions equal to the extreme get dY)." if _kind in ("Max", "Min") else "."),
    )


def _front_back_maker(grad_type: str, with_y: bool) -> Maker:
    def maker(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
        g = GradientContext(op, g_out)
        ins = [g.GO(0), g.I(0)] + ([g.O(0)] if with_y else [])
        if len(op.input) > 1:
            ins.append(g.I(1))
        return g.spec([g.op_def(grad_type, ins, [g.GI(0)])])

    return maker


def _dx_shape(v: np.ndarray) -> tuple[int, ...]:
    # Caffe2: input 1 is the forward data, or its shape as a 1-D int64 tensor.
    if v.ndim == 1 and v.dtype == np.int64:
        return tuple(int(d) for d in v.tolist())
    return tuple(v.shape)


def _lengths_mask(lens: Any, shape: tuple[int, ...], k: int, front: bool) -> tuple[np.ndarray, np.ndarray]:
    """(mask over dX in the 2-D (rows, cols) view, lengths as float) for a lengths input."""
    red, kept = (shape[:k], shape[k:]) if front else (shape[len(shape) - k :], shape[: len(shape) - k])
    n_red, n_kept = int(np.prod(red, dtype=np.int64)), int(np.prod(kept, dtype=np.int64))
    ln = np.asarray(lens).reshape(-1).astype(np.int64)
    if ln.size != n_kept or np.any(ln < 0) or np.any(ln > n_red):
        raise ArgumentError(f"lengths must hold {n_kept} values in [0, {n_red}], got {ln.tolist()}")
    pos = np.arange(n_red)
    mask = pos[:, None] < ln[None, :] if front else pos[None, :] < ln[:, None]
    return mask, ln


def _fb_gradient(kind: str, front: bool, dy: np.ndarray, first: np.ndarray, y: Any, lens: Any, k: int) -> np.ndarray:
    shape = _dx_shape(first)
    if not 0 <= k <= len(shape):
        raise ArgumentError(f"num_reduce_dim {k} is out of range for X of rank {len(shape)}")
    axes = tuple(range(k)) if front else tuple(range(len(shape) - k, len(shape)))
    d = _expand_back(dy, shape, axes)
    if kind in ("Max", "Min"):
        dx = np.where(first == _expand_back(np.asarray(y), shape, axes), d, 0).astype(dy.dtype)
    elif kind == "Sum" or lens is not None:
        dx = np.broadcast_to(d, shape).astype(dy.dtype)
    else:
        count = int(np.prod([shape[a] for a in axes], dtype=np.int64))
        dx = np.broadcast_to(d / max(count, 1), shape).astype(dy.dtype)
    if lens is None:
        return dx
    mask, ln = _lengths_mask(lens, shape, k, front)
    flat = dx.reshape(mask.shape) * mask
    if kind == "Mean":
        denom = np.maximum(ln, 1).astype(dy.dtype)
        flat = flat / (denom[None, :] if front else denom[:, None])
    return np.asarray(flat.reshape(shape), dtype=dy.dtype)


for _side in ("Front", "Back"):
    for _kind in ("Sum", "Mean", "Max", "Min"):
        _with_y = _kind in ("Max", "Min")
        _fwd = f"Reduce{_side}{_kind}"
        register_gradient(_fwd)(_front_back_maker(f"{_fwd}Gradient", _with_y))

        def _fb_factory(op: OpInfo, kind: str = _kind, front: bool = _side == "Front") -> Callable[..., Any]:
            k = op.int_arg("num_reduce_dim")

            def run(dy: Any, x: Any, *rest: Any) -> tuple[np.ndarray]:
                y = rest[0] if kind in ("Max", "Min") else None
                extra = rest[1:] if kind in ("Max", "Min") else rest
                lens = extra[0] if extra else None
                return (_fb_gradient(kind, front, np.asarray(dy), np.asarray(x), y, lens, k),)

            return run

        register_op(
            f"{_fwd}Gradient",
            inputs=(2, 3) if not _with_y else (3, 4),
            outputs=1,
            args=(Arg("num_reduce_dim", 1, "the forward num_reduce_dim"),),
            infer=lambda op, ins: [
                TensorInfo(
                    None
                    if ins[1].dtype == np.int64 and ins[1].shape is not None and len(ins[1].shape) == 1
                    else ins[1].shape,
                    ins[0].dtype,
                )
            ],
            doc=f"Gradient of {_fwd}: inputs dY, X (or its shape as 1-D int64)"
            + (", Y" if _with_y else "")
            + ", [lengths]; output dX (positions past lengths[i] get 0"
            + ("; Mean divides by lengths[i]" if _kind == "Mean" else "")
            + ").",
            output_names=("dX",),
        )(_fb_factory)


register_single_gradient_op("SumElements", "SumElementsGradient", n_inputs=1, n_grads=1)


@register_op(
    "SumElementsGradient",
    inputs=2,
    outputs=1,
    args=(Arg("average", 0, "the forward average flag"),),
    infer=same_as_input(0),
    doc="Gradient of SumElements: dX = dY everywhere (divided by X.size when `average`).",
    input_names=("X", "dY"),
    output_names=("dX",),
)
def sum_elements_gradient(op: OpInfo) -> Callable[..., Any]:
    average = op.bool_arg("average")

    def run(x: Any, dy: Any) -> tuple[np.ndarray]:
        x = np.asarray(x)
        v = float(np.asarray(dy).reshape(-1)[0])
        if average:
            v /= max(x.size, 1)
        return (np.full(x.shape, v, dtype=x.dtype),)

    return run


# -- Slice ------------------------------------------------------------------------------------------


@register_gradient("Slice")
def _slice_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    ins = [g.I(0), g.I(1), g.I(2), g.GO(0)] if len(op.input) > 1 else [g.I(0), g.GO(0)]
    return g.spec([g.op_def("SliceGradient", ins, [g.GI(0)])])


@register_op(
    "SliceGradient",
    inputs=(2, 4),
    outputs=1,
    arity=lambda i, o: i != 3,
    args=(Arg("starts", [], "the forward starts"), Arg("ends", [], "the forward ends")),
    infer=same_as_input(0),
    doc="Gradient of Slice: inputs X, [starts, ends,] dY; dX is zero outside the slice and dY inside.",
    input_names=("X", "starts", "ends", "dY"),
    output_names=("dX",),
)
def slice_gradient(op: OpInfo) -> Callable[..., Any]:
    st, en = op.ints_arg("starts"), op.ints_arg("ends")

    def run(x: Any, *rest: Any) -> tuple[np.ndarray]:
        x = np.asarray(x)
        dy = np.asarray(rest[-1])
        if len(rest) == 3:
            s = [int(v) for v in np.asarray(rest[0]).reshape(-1)]
            e = [int(v) for v in np.asarray(rest[1]).reshape(-1)]
        else:
            s, e = st, en
        dx = np.zeros(x.shape, dtype=dy.dtype)
        dx[tuple(slice_bounds(op, x.shape, s, e))] = dy
        return (dx,)

    return run


for _kind in ("L1", "L2"):

    def _norm_factory(op: OpInfo, kind: str = _kind) -> Callable[..., Any]:
        def run(dy: Any, x: Any, y: Any) -> tuple[np.ndarray]:
            dy, x, y = np.asarray(dy), np.asarray(x), np.asarray(y)
            axes = _axes(op, x.ndim)
            d = _expand_back(dy, x.shape, axes)
            if kind == "L1":
                dx = d * np.sign(x)
            else:
                yy = _expand_back(y, x.shape, axes)
                # Where the norm is 0 every x is 0 and the subgradient 0 is used.
                dx = np.where(yy != 0, d * x / np.where(yy != 0, yy, 1), 0)
            return (np.array(dx, dtype=dy.dtype),)

        return run

    _register_reduce_gradient(
        _kind,
        _norm_factory,
        f"Gradient of Reduce{_kind}: inputs dY, X, Y; "
        + ("dX = dY * sign(X)." if _kind == "L1" else "dX = dY * X / Y."),
    )


for _name, _row in (("ColwiseMax", False), ("RowwiseMax", True)):
    register_gradient(_name)(_maker(f"{_name}Gradient", ("I0", "O0", "GO0")))

    def _rowcol_factory(op: OpInfo, row: bool = _row) -> Callable[..., Any]:
        def run(x: Any, y: Any, dy: Any) -> tuple[np.ndarray]:
            x, y, dy = np.asarray(x), np.asarray(y), np.asarray(dy)
            if x.ndim != 3:
                raise ArgumentError(f"X {x.shape} must be 3-D (batch, M, N)")
            yy = y.reshape(x.shape[0], -1, 1) if row else y.reshape(x.shape[0], 1, -1)
            d = dy.reshape(yy.shape)
            return (np.where(x == yy, d, 0).astype(dy.dtype, copy=False),)

        return run

    register_op(
        f"{_name}Gradient",
        inputs=3,
        outputs=1,
        infer=same_as_input(0),
        doc=f"Gradient of {_name}: inputs X, Y, dY; positions equal to their "
        + ("row" if _row else "column")
        + " maximum get dY.",
        input_names=("X", "Y", "dY"),
        output_names=("dX",),
    )(_rowcol_factory)
