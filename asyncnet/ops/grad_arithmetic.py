"""Gradients of Add, Sub, Mul, Div (numpy or legacy broadcasting) and Sum (pass-through)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.opinfo import OpInfo
from asyncnet.ops.arithmetic import BROADCAST_ARGS, legacy_shape
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import register_op
from asyncnet.schema import TensorInfo
from asyncnet.training.gradients import GradientContext, GradientSpec, register_gradient


def reduce_to_shape(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``g`` over the dims numpy broadcasting added or stretched to reach g's shape from ``shape``."""
    lead = g.ndim - len(shape)
    if lead > 0:
        g = g.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, (d, gd) in enumerate(zip(shape, g.shape)) if d == 1 and gd != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


def _b_view_shape(op: OpInfo, a_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> tuple[int, ...]:
    # Under legacy broadcasting B is aligned at `axis`; padding it with ones turns the
    # reduction into the numpy case.
    if op.bool_arg("broadcast", 0):
        return tuple(legacy_shape(op, a_shape, b_shape))
    return b_shape


def _binary_grad_maker(grad_type: str, with_output: bool) -> Callable[[pb.OperatorDef, list[str | None]], GradientSpec]:
    def maker(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
        g = GradientContext(op, g_out)
        ins = [g.GO(0), g.I(0), g.I(1)] + ([g.O(0)] if with_output else [])
        return g.spec([g.op_def(grad_type, ins, [g.GI(0), g.GI(1)])])

    return maker


def _grad_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    if op.type == "DivGradient" and len(ins) == 3:
        return [TensorInfo(ins[1].shape, ins[2].dtype), TensorInfo(ins[0].shape, ins[2].dtype)]
    return [TensorInfo(ins[1].shape, ins[0].dtype), TensorInfo(ins[2].shape, ins[0].dtype)]


GradFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None], tuple[np.ndarray, np.ndarray]]


def _register_binary_grad(fwd: str, fn: GradFn, doc: str, with_output: bool = False) -> None:
    grad_type = f"{fwd}Gradient"
    register_gradient(fwd)(_binary_grad_maker(grad_type, with_output))

    def factory(op: OpInfo) -> Callable[..., Any]:
        legacy = with_output and len(op.inputs) == 3

        def run(dc: Any, a: Any, b: Any, c: Any = None) -> tuple[np.ndarray, np.ndarray]:
            if legacy:
                # Caffe2's older DivGradient form: inputs B, C, dC (no A; dA has C's shape).
                b_, c_, dc_ = np.asarray(dc), np.asarray(a), np.asarray(b)
                dc, a, b, c = dc_, c_, b_, c_
            dc, a, b = np.asarray(dc), np.asarray(a), np.asarray(b)
            b_view = _b_view_shape(op, a.shape, b.shape)
            da, db = fn(dc, a, b.reshape(b_view), None if c is None else np.asarray(c))
            da = reduce_to_shape(np.broadcast_to(da, dc.shape), a.shape)
            db = reduce_to_shape(np.broadcast_to(db, dc.shape), b_view).reshape(b.shape)
            return da.astype(dc.dtype, copy=False), db.astype(dc.dtype, copy=False)

        return run

    names = ("dC", "A", "B", "C") if with_output else ("dC", "A", "B")
    register_op(
        grad_type,
        inputs=(3, 4) if with_output else 3,
        outputs=2,
        # dC may be overwritten by dA or dB: in-place forward ops name them alike.
        allow_inplace=[(0, 0), (0, 1)],
        args=BROADCAST_ARGS,
        infer=_grad_infer,
        doc=f"{doc} Broadcast dims are summed back to the input shapes."
        + (" The legacy 3-input form takes B, C, dC." if with_output else ""),
        input_names=names,
        output_names=("dA", "dB"),
    )(factory)


_register_binary_grad("Add", lambda dc, a, b, c: (dc, dc), "Gradient of Add: dA = dC, dB = dC.")
_register_binary_grad("Sub", lambda dc, a, b, c: (dc, -dc), "Gradient of Sub: dA = dC, dB = -dC.")
_register_binary_grad("Mul", lambda dc, a, b, c: (dc * b, dc * a), "Gradient of Mul: dA = dC * B, dB = dC * A.")


def _div_fn(dc: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    q = a / b if c is None else c
    return dc / b, -dc * q / b


_register_binary_grad("Div", _div_fn, "Gradient of Div: dA = dC / B, dB = -dC * C / B.", with_output=True)


@register_gradient("Sum")
def _sum_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    # Every input's gradient is the output's gradient itself: no op needed.
    g = GradientContext(op, g_out)
    for i in range(len(op.input)):
        g.set_dense(i, g.GO(0))
    return g.spec([])
