"""Caffe2's ``control_ops_grad``: the gradient makers of Do, If and While as Python functions.

``gen_do_gradient(op, g_output)``, ``gen_if_gradient`` and ``gen_while_gradient`` return
``(gradient ops, gradient blob per input)`` like Caffe2's; they are the makers
``core.AddGradientOperators`` uses (:mod:`asyncnet.ops.control_grad`,
:mod:`asyncnet.ops.control_grad_while`). ``disambiguate_grad_if_op_output`` renames an output
of a gradient If where its branches write it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from asyncnet.errors import GradientError
from asyncnet.ops.control_grad import net_arg, rename_if_output
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.training.gradients import gradient_for_op

__all__ = [
    "disambiguate_grad_if_op_output",
    "gen_do_gradient",
    "gen_if_gradient",
    "gen_while_gradient",
    "getNetArgument",
]


def _gen(op_type: str, op: pb.OperatorDef, g_output: Sequence[Any]) -> tuple[list[pb.OperatorDef], list[str | None]]:
    if op.type != op_type:
        raise GradientError(f"gen_{op_type.lower()}_gradient: expected a {op_type} op, got {op.type}")
    spec = gradient_for_op(op, [None if g is None else str(g) for g in g_output])
    return spec.ops, spec.grad_inputs


def gen_do_gradient(op: pb.OperatorDef, g_output: Sequence[Any]) -> tuple[list[pb.OperatorDef], list[str | None]]:
    """The gradient Do of a forward Do, and the gradient blob of each of its inputs."""
    return _gen("Do", op, g_output)


def gen_if_gradient(op: pb.OperatorDef, g_output: Sequence[Any]) -> tuple[list[pb.OperatorDef], list[str | None]]:
    """The gradient If of a forward If, and the gradient blob of each of its inputs."""
    return _gen("If", op, g_output)


def gen_while_gradient(op: pb.OperatorDef, g_output: Sequence[Any]) -> tuple[list[pb.OperatorDef], list[str | None]]:
    """The gradient ops of a forward While (body: one Do), and the gradient blob of each input."""
    return _gen("While", op, g_output)


def disambiguate_grad_if_op_output(grad_op: pb.OperatorDef, idx: int, new_grad_output: str) -> None:
    """Rename output ``idx`` of a gradient If, in its then/else nets' ops too."""
    rename_if_output(grad_op, idx, str(new_grad_output))


def getNetArgument(op: pb.OperatorDef, net_name: str) -> pb.NetDef | None:
    """The NetDef argument ``net_name`` of ``op`` (None when absent)."""
    return net_arg(op, net_name)
