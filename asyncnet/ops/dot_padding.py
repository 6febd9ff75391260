"""DotProductWithPadding (+ gradient): row-wise dot products of X (N, DX) and Y (N, DY) whose widths differ;
the shorter row is padded with `pad_value`, or with `replicate` tiled to the longer width."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import TensorError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import info
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import register_op
from asyncnet.schema import Arg
from asyncnet.training.gradients import GradientContext, GradientSpec, register_gradient

_ARGS = (
    Arg("pad_value", 0.0, "value the shorter row is padded with"),
    Arg("replicate", 0, "tile the shorter row instead of padding (the widths must divide)"),
)


def _rows(op: OpInfo, x: Any, y: Any, replicate: bool) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(x, np.float32), np.asarray(y, np.float32)
    if a.ndim != b.ndim or (a.ndim and a.shape[0] != b.shape[0]):
        raise TensorError(f"{op.label()}: X {a.shape} and Y {b.shape} need the same rank and first dim")
    n = a.shape[0] if a.ndim else 1
    a2, b2 = (
        a.reshape(n, -1) if a.size else np.zeros((n, 0), np.float32),
        b.reshape(n, -1) if b.size else np.zeros((n, 0), np.float32),
    )
    small, big = sorted((a2.shape[1], b2.shape[1]))
    if replicate and small and big % small:
        raise TensorError(f"{op.label()}: replicate needs the longer width {big} to be a multiple of {small}")
    return a2, b2


def _widen(short: np.ndarray, width: int, pad: float, replicate: bool) -> np.ndarray:
    """The shorter rows brought to ``width`` columns."""
    if replicate:
        return np.tile(short, (1, width // max(short.shape[1], 1)))
    return np.concatenate([short, np.full((short.shape[0], width - short.shape[1]), np.float32(pad))], axis=1)


@register_op(
    "DotProductWithPadding",
    inputs=2,
    args=_ARGS,
    infer=lambda op, ins: [info(None if ins[0].shape is None else ins[0].shape[:1], np.float32)],
    doc="Dot product of each row of X (N, DX) and Y (N, DY); the shorter row is padded with pad_value "
    "or, with replicate, tiled to the longer width. Output (N,).",
    input_names=("X", "Y"),
    output_names=("Z",),
)
def dot_product_with_padding(op: OpInfo) -> Callable[..., Any]:
    pad, rep = op.float_arg("pad_value"), op.bool_arg("replicate")

    def run(x: Any, y: Any) -> tuple[np.ndarray]:
        a, b = _rows(op, x, y, rep)
        width = max(a.shape[1], b.shape[1])
        if a.shape[1] < width:
            a = _widen(a, width, pad, rep)
        elif b.shape[1] < width:
            b = _widen(b, width, pad, rep)
        return ((a * b).sum(axis=1, dtype=np.float32),)

    return run


@register_gradient("DotProductWithPadding")
def _grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("DotProductWithPaddingGradient", [g.I(0), g.I(1), g.GO(0)], [g.GI(0), g.GI(1)])])


@register_op(
    "DotProductWithPaddingGradient",
    inputs=3,
    outputs=2,
    args=_ARGS,
    infer=lambda op, ins: [ins[0], ins[1]],
    doc="Gradient of DotProductWithPadding: inputs X, Y, dZ; outputs dX, dY (a tiled row collects the "
    "gradient of every copy).",
    input_names=("X", "Y", "dZ"),
    output_names=("dX", "dY"),
)
def dot_product_with_padding_gradient(op: OpInfo) -> Callable[..., Any]:
    pad, rep = op.float_arg("pad_value"), op.bool_arg("replicate")

    def run(x: Any, y: Any, dz: Any) -> tuple[np.ndarray, np.ndarray]:
        a, b = _rows(op, x, y, rep)
        d = np.asarray(dz, np.float32).reshape(-1, 1)
        width = max(a.shape[1], b.shape[1])
        wide_a = _widen(a, width, pad, rep) if a.shape[1] < width else a
        wide_b = _widen(b, width, pad, rep) if b.shape[1] < width else b
        grads = []
        for own, other in ((a, wide_b), (b, wide_a)):
            full = d * other
            k = own.shape[1]
            if k < width:
                # Only the row's own entries (or, tiled, the sum over its copies) carry gradient.
                full = full.reshape(full.shape[0], -1, k).sum(axis=1) if rep else full[:, :k]
            grads.append(full.astype(np.float32))
        return grads[0].reshape(np.shape(x)), grads[1].reshape(np.shape(y))

    return run
