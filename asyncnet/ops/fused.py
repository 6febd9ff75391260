"""Fused inference ops made by graph rewrites: ConvRelu, FCRelu, SumRelu.

Each builds the registered kernel of its base op (Conv, FC, Sum) and applies the Relu in place on
that kernel's fresh output, saving one pass over the activation and one temporary. Caffe2 had
``ConvRelu`` for the same purpose; ``asyncnet.transforms`` produces them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from asyncnet.opinfo import OpInfo
from asyncnet.ops._conv_util import CONV_ARGS
from asyncnet.ops._zeros import relu_into
from asyncnet.ops.dense import FC_ARGS
from asyncnet.registry import default_registry, register_op
from asyncnet.schema import TensorInfo

#: fused type -> the op whose kernel it runs before the Relu.
FUSED_BASE: dict[str, str] = {"ConvRelu": "Conv", "FCRelu": "FC", "SumRelu": "Sum"}


def _base_info(op: OpInfo, base: str) -> OpInfo:
    reg = default_registry()
    return replace(op, type=base, schema=reg.schema(base))


def _infer_as(base: str) -> Callable[[OpInfo, list[TensorInfo]], list[TensorInfo]]:
    def infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
        info = _base_info(op, base)
        fn = info.schema.infer
        if fn is None:  # pragma: no cover - Conv, FC and Sum all infer
            return [TensorInfo(None, ins[0].dtype)]
        return fn(info, ins)

    return infer


def _relu_after(base: str) -> Callable[[OpInfo], Callable[..., Any]]:
    def factory(op: OpInfo) -> Callable[..., Any]:
        info = _base_info(op, base)
        entry = default_registry().kernel(base, op.device.type, op.engine, where=op.label())
        kernel = entry.factory(info)

        def run(*xs: Any) -> tuple[np.ndarray]:
            y = kernel(*xs)[0]
            if isinstance(y, np.ndarray) and y.flags.writeable and not any(np.may_share_memory(y, x) for x in xs):
                relu_into(y, y)
                return (y,)
            # The base kernel handed back something it does not own (a view of an input): never write it.
            return (np.maximum(y, 0).astype(np.asarray(y).dtype, copy=False),)

        return run

    return factory


def _register() -> None:
    register_op(
        "ConvRelu",
        inputs=(2, 3),
        outputs=1,
        args=CONV_ARGS,
        infer=_infer_as("Conv"),
        doc="Y = Relu(Conv(X, filter, bias)): the Conv kernel, then max(Y, 0) in place on its output. "
        "Made by inference graph rewrites (asyncnet.transforms); same arguments as Conv.",
        input_names=("X", "filter", "bias"),
        output_names=("Y",),
    )(_relu_after("Conv"))
    register_op(
        "FCRelu",
        inputs=3,
        outputs=1,
        args=FC_ARGS,
        infer=_infer_as("FC"),
        doc="Y = Relu(FC(X, W, b)): the FC kernel, then max(Y, 0) in place on its output. "
        "Made by inference graph rewrites (asyncnet.transforms); same arguments as FC.",
        input_names=("X", "W", "b"),
        output_names=("Y",),
    )(_relu_after("FC"))
    register_op(
        "SumRelu",
        inputs=(1, -1),
        outputs=1,
        allow_inplace=lambda i, o: o == 0,
        infer=_infer_as("Sum"),
        doc="Y = Relu(Sum(X0, X1, ...)): the Sum kernel, then max(Y, 0) in place on its output. "
        "Made by inference graph rewrites (asyncnet.transforms), e.g. for residual joins.",
    )(_relu_after("Sum"))


_register()
