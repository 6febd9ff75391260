"""In-process Python ops: a function registered in this process, called with Caffe2's (inputs, outputs)
protocol.

Functions are registered by token (``register_python_function``, used by
``asyncnet.compat.core.CreatePythonOperator``); the op names the token in its ``token`` argument.
Nothing is ever loaded or unpickled from a file: a token that this process did not register fails.
The op types are ``InProcessPython`` / ``InProcessPythonGradient``, deliberately not Caffe2's ``Python``:
a net file naming ``Python`` (code from elsewhere) stays an unknown operator.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.opinfo import OpInfo
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo
from asyncnet.training.gradients import GradientContext, GradientSpec, register_gradient

_FUNCS: dict[str, Callable[..., Any]] = {}
_LOCK = threading.Lock()
_COUNTER = itertools.count()


def register_python_function(fn: Callable[..., Any]) -> str:
    """Keep ``fn`` for Python ops of this process; returns its token."""
    with _LOCK:
        token = f"python_func_{next(_COUNTER)}_{getattr(fn, '__name__', 'fn')}"
        _FUNCS[token] = fn
        return token


class PyTensor:
    """Caffe2's TensorCPU view handed to Python ops: ``.data``, ``.shape``, ``.reshape()``, ``.feed()``."""

    def __init__(self, value: Any = None) -> None:
        self._value = None if value is None else np.asarray(value)

    @property
    def data(self) -> np.ndarray:
        if self._value is None:
            raise ArgumentError("this output has no data yet: call reshape(shape) or feed(array) first")
        return self._value

    @property
    def shape(self) -> tuple[int, ...]:
        return () if self._value is None else tuple(self._value.shape)

    def reshape(self, shape: Any) -> None:
        dtype = self._value.dtype if self._value is not None else np.float32
        self._value = np.zeros(tuple(int(d) for d in shape), dtype)

    def feed(self, value: Any) -> bool:
        self._value = np.asarray(value)
        return True

    def value(self) -> Any:
        return self._value


def _function(op: OpInfo, arg: str) -> Callable[..., Any]:
    token = op.str_arg(arg)
    fn = _FUNCS.get(token)
    if fn is None:
        raise ArgumentError(
            f"{op.label()}: no Python function '{token}' is registered in this process "
            "(Python ops run functions created with CreatePythonOperator here, never from files)"
        )
    return fn


def _factory(arg: str) -> Callable[[OpInfo], Callable[..., Any]]:
    def factory(op: OpInfo) -> Callable[..., Any]:
        fn = _function(op, arg)
        n_out = len(op.outputs)
        with_ws = op.bool_arg("pass_workspace")

        def run(*ins: Any) -> list[Any]:
            inputs = [PyTensor(x) for x in ins]
            outputs = [PyTensor() for _ in range(n_out)]
            if with_ws:
                fn(inputs, outputs, op.workspace)
            else:
                fn(inputs, outputs)
            vals = [o.value() for o in outputs]
            missing = [i for i, v in enumerate(vals) if v is None]
            if missing:
                raise ArgumentError(f"{op.label()}: the Python function left outputs {missing} unset")
            return vals

        return run

    return factory


_ARGS = (
    Arg("token", "", "the registered forward function"),
    Arg("grad_token", "", "the registered gradient function"),
    Arg("pass_workspace", 0, "also pass the workspace to the function"),
)

register_op(
    "InProcessPython",
    inputs=(0, -1),
    outputs=(0, -1),
    args=_ARGS,
    allow_unknown_args=True,
    infer=lambda op, ins: [TensorInfo(None, None)] * len(op.outputs),
    doc="Call the in-process Python function `token` as f(inputs, outputs) (Caffe2's protocol).",
)(_factory("token"))

register_op(
    "InProcessPythonGradient",
    inputs=(0, -1),
    outputs=(0, -1),
    args=_ARGS,
    allow_unknown_args=True,
    infer=lambda op, ins: [TensorInfo(None, None)] * len(op.outputs),
    doc="Call the in-process gradient function `grad_token` as g(inputs + outputs + output grads, input grads).",
)(_factory("grad_token"))


@register_gradient("InProcessPython")
def _python_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    if not g.arg("grad_token", ""):
        raise ArgumentError(f"in-process Python op '{op.name or op.type}' has no gradient function (grad_f)")
    ins = [g.I(i) for i in range(len(op.input))] + [g.O(i) for i in range(len(op.output))]
    ins += [g.GO(i) for i in range(len(op.output))]
    return g.spec([g.op_def("InProcessPythonGradient", ins, [g.GI(i) for i in range(len(op.input))])])
