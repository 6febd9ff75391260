"""Gradients of elementwise activations and powers: Swish, Softplus, Selu, HardSigmoid, Softsign, ThresholdedRelu,
Cube, Cbrt, Reciprocal, Rsqrt, Erf, Log1p.

Each gradient op takes Caffe2's inputs (some from X, some from the output Y, always dY) and the
forward op's arguments, with the forward op's defaults.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.opinfo import OpInfo
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import default_registry, register_op
from asyncnet.schema import Arg, same_as_input
from asyncnet.training.gradients import GradientContext, GradientSpec, register_gradient

Fn = Callable[[dict[str, np.ndarray], dict[str, float]], np.ndarray]


def _erf_grad(v: dict[str, np.ndarray], a: dict[str, float]) -> np.ndarray:
    return np.asarray(v["dY"] * (2.0 / math.sqrt(math.pi)) * np.exp(-v["X"] * v["X"]))


def _swish_grad(v: dict[str, np.ndarray], a: dict[str, float]) -> np.ndarray:
    x, y = v["X"], v["Y"]
    sig = 1.0 / (1.0 + np.exp(-x))
    return np.asarray(v["dY"] * (y + sig * (1.0 - y)))


# forward type: (gradient inputs as "X"/"Y"/"dY" in Caffe2's order, forward args, dX, doc)
_TABLE: dict[str, tuple[tuple[str, ...], tuple[str, ...], Fn, str]] = {
    "Swish": (("X", "Y", "dY"), (), _swish_grad, "dX = dY * (Y + sigmoid(X) * (1 - Y))"),
    "Softplus": (("Y", "dY"), (), lambda v, a: v["dY"] * (1.0 - np.exp(-v["Y"])), "dX = dY * (1 - exp(-Y))"),
    "Selu": (
        ("Y", "dY"),
        ("alpha", "scale"),
        lambda v, a: np.where(v["Y"] > 0, v["dY"] * a["scale"], v["dY"] * (v["Y"] + a["alpha"] * a["scale"])),
        "dX = dY * scale where Y > 0, else dY * (Y + alpha * scale)",
    ),
    "HardSigmoid": (
        ("Y", "dY"),
        ("alpha", "beta"),
        lambda v, a: np.where((v["Y"] > 0) & (v["Y"] < 1), v["dY"] * a["alpha"], 0),
        "dX = dY * alpha where 0 < Y < 1",
    ),
    "ThresholdedRelu": (
        ("Y", "dY"),
        ("alpha",),
        lambda v, a: np.where(v["Y"] > 0, v["dY"], 0),
        "dX = dY where Y > 0",
    ),
    "Softsign": (("X", "dY"), (), lambda v, a: v["dY"] / np.square(1.0 + np.abs(v["X"])), "dX = dY / (1 + |X|)^2"),
    "Cube": (("dY", "X"), (), lambda v, a: 3.0 * v["dY"] * v["X"] * v["X"], "dX = 3 * dY * X^2"),
    "Cbrt": (("dY", "Y"), (), lambda v, a: v["dY"] / (3.0 * v["Y"] * v["Y"]), "dX = dY / (3 * Y^2)"),
    "Reciprocal": (("Y", "dY"), (), lambda v, a: -v["dY"] * v["Y"] * v["Y"], "dX = -dY * Y^2"),
    "Rsqrt": (("dY", "Y"), (), lambda v, a: -0.5 * v["dY"] * v["Y"] ** 3, "dX = -dY * Y^3 / 2"),
    "Erf": (("X", "dY"), (), _erf_grad, "dX = dY * 2 / sqrt(pi) * exp(-X^2)"),
    "Log1p": (("X", "dY"), (), lambda v, a: v["dY"] / (1.0 + v["X"]), "dX = dY / (1 + X)"),
}


# Caffe2 checks only that these gradients' inputs have one element count; dX takes Y's shape.
_NUMEL_ONLY = {"Selu": "Y"}


def _maker(grad_type: str, order: Sequence[str]) -> Callable[[pb.OperatorDef, list[str | None]], GradientSpec]:
    def maker(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
        g = GradientContext(op, g_out)
        pick = {"X": lambda: g.I(0), "Y": lambda: g.O(0), "dY": lambda: g.GO(0)}
        return g.spec([g.op_def(grad_type, [pick[s]() for s in order], [g.GI(0)])])

    return maker


def _factory(fwd: str, order: Sequence[str], arg_names: Sequence[str], fn: Fn) -> Callable[[OpInfo], Any]:
    def factory(op: OpInfo) -> Callable[..., Any]:
        # Absent arguments take the forward op's defaults, so the two can never disagree.
        fwd_schema = default_registry().schema(fwd)
        args = {n: op.float_arg(n, fwd_schema.arg_default(n)) for n in arg_names}

        def run(*ins: Any) -> tuple[np.ndarray]:
            vals = {name: np.asarray(v) for name, v in zip(order, ins)}
            shaped_as = _NUMEL_ONLY.get(fwd)
            if shaped_as is not None:
                sizes = {v.size for v in vals.values()}
                if len(sizes) != 1:
                    raise ArgumentError(f"inputs {', '.join(order)} must have one element count, got {sorted(sizes)}")
                vals = {k: v.reshape(vals[shaped_as].shape) for k, v in vals.items()}
            shapes = {v.shape for v in vals.values()}
            if len(shapes) != 1:
                raise ArgumentError(f"inputs {', '.join(order)} must have one shape, got {sorted(shapes)}")
            return (np.asarray(fn(vals, args)).astype(vals["dY"].dtype, copy=False),)

        return run

    return factory


for _fwd, (_order, _args, _fn, _doc) in _TABLE.items():
    register_gradient(_fwd)(_maker(f"{_fwd}Gradient", _order))
    register_op(
        f"{_fwd}Gradient",
        inputs=len(_order),
        outputs=1,
        # Gradients of in-place forward ops write dX over dY (Caffe2 names both X_grad).
        allow_inplace=True,
        args=tuple(Arg(n, None, f"the forward {n} (default: the forward op's)") for n in _args),
        infer=same_as_input(_order.index(_NUMEL_ONLY.get(_fwd, "dY"))),
        doc=f"Gradient of {_fwd}: {_doc}.",
        input_names=_order,
        output_names=("dX",),
    )(_factory(_fwd, _order, _args, _fn))
