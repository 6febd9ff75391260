"""Logit (+ gradient): log(x / (1 - x)) with x clamped to [eps, 1 - eps]."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.opinfo import OpInfo
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import register_op
from asyncnet.schema import Arg
from asyncnet.training.gradients import GradientContext, GradientSpec, register_gradient

_EPS = Arg("eps", 1e-6, "inputs are clamped to [eps, 1 - eps]")


def _eps(op: OpInfo) -> float:
    eps = op.float_arg("eps")
    if not 0.0 <= eps < 0.5:
        raise ArgumentError(f"{op.label()}: eps must be in [0, 0.5), got {eps}")
    return eps


@register_op(
    "Logit",
    args=(_EPS,),
    allow_inplace=True,
    infer=lambda op, ins: [ins[0]],
    doc="Y = log(x / (1 - x)) elementwise, x = X clamped to [eps, 1 - eps].",
    input_names=("X",),
    output_names=("Y",),
)
def logit(op: OpInfo) -> Callable[..., Any]:
    eps = _eps(op)

    def run(x: Any) -> tuple[np.ndarray]:
        a = np.asarray(x)
        c = np.clip(a, eps, 1.0 - eps)
        return (np.log(c / (1.0 - c)).astype(a.dtype, copy=False),)

    return run


@register_gradient("Logit")
def _logit_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("LogitGradient", [g.I(0), g.GO(0)], [g.GI(0)])])


@register_op(
    "LogitGradient",
    inputs=2,
    args=(_EPS,),
    allow_inplace=[(1, 0)],
    infer=lambda op, ins: [ins[0]],
    doc="Gradient of Logit: dX = dY / (X (1 - X)) inside [eps, 1 - eps], 0 where X was clamped.",
    input_names=("X", "dY"),
    output_names=("dX",),
)
def logit_gradient(op: OpInfo) -> Callable[..., Any]:
    eps = _eps(op)

    def run(x: Any, dy: Any) -> tuple[np.ndarray]:
        a, d = np.asarray(x), np.asarray(dy)
        inside = (a >= eps) & (a <= 1.0 - eps)
        with np.errstate(divide="ignore", invalid="ignore"):
            g = np.where(inside, d / (a * (1.0 - a)), 0.0)
        return (g.astype(d.dtype, copy=False),)

    return run
