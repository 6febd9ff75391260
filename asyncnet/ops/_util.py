"""Helpers shared by kernel modules (not an op family)."""

from __future__ import annotations

from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.opinfo import OpInfo
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.schema import TensorInfo
from asyncnet.training.gradients import GradientContext, GradientSpec, register_gradient


def prod(dims: Any) -> int:
    """Product of integer dims (1 for none)."""
    n = 1
    for d in dims:
        n *= int(d)
    return n


def prod_known(dims: Any) -> int | None:
    """Product of partially known dims, None when any is unknown."""
    n = 1
    for d in dims:
        if d is None:
            return None
        n *= int(d)
    return n


def canonical_axis(axis: int, ndim: int, op: OpInfo, name: str = "axis") -> int:
    """Map a possibly negative axis into [0, ndim), with a clear error otherwise."""
    a = axis + ndim if axis < 0 else axis
    if not 0 <= a < max(ndim, 1):
        raise ArgumentError(f"{op.label()}: {name} {axis} is out of range for a tensor of rank {ndim}")
    return a


def order_arg(op: OpInfo) -> str:
    """The ``order`` argument (NCHW or NHWC), validated."""
    order = str(op.arg("order", "NCHW")).upper()
    if order not in ("NCHW", "NHWC"):
        raise ArgumentError(f"{op.label()}: order must be NCHW or NHWC, got '{order}'")
    return order


def rng_for(op: OpInfo) -> np.random.Generator:
    """A generator seeded from the op's DeviceOption.random_seed when set."""
    opt = op.device_option
    if opt is not None and opt.HasField("random_seed"):
        return np.random.default_rng(opt.random_seed)
    return np.random.default_rng()


def info(shape: Any, dtype: Any) -> TensorInfo:
    """TensorInfo from a shape (or None) and a dtype (or None)."""
    return TensorInfo(None if shape is None else tuple(shape), None if dtype is None else np.dtype(dtype))


def register_single_gradient_op(op_type: str, grad_type: str, *, n_inputs: int, n_grads: int) -> None:
    """Register the common gradient maker of ``op_type``: one ``grad_type`` op.

    It reads the first ``n_inputs`` forward inputs and the output gradient, and writes the
    gradients of the first ``n_grads`` inputs.
    """

    def maker(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
        g = GradientContext(op, g_out)
        ins = [g.I(i) for i in range(n_inputs)] + [g.GO(0)]
        return g.spec([g.op_def(grad_type, ins, [g.GI(i) for i in range(n_grads)])])

    register_gradient(op_type)(maker)
