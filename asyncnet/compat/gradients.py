"""The backward pass as Caffe2's ``core`` exposed it: ``GradientRegistry`` and ``Net.AddGradientOperators``.

Built on :mod:`asyncnet.training.gradients`. Two things are Caffe2's and live here:

* gradients may be *given* (``{"loss": "loss_grad"}``): then no ``ConstantFill`` seed
  is added and the given blob is read where the seed's output would be;
* Caffe2's fill ops were NO_GRADIENT, so a train net that draws its data with
  GaussianFill (the toy-regression tutorial) gets a backward pass that stops there.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from asyncnet.errors import ArgumentError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.training.gradients import GradientSpec, add_gradient_ops, gradient_for_op
from asyncnet.training.gradients import register_gradient as _register_gradient

__all__ = ["GradientRegistry", "add_backward_pass"]


def _split_ys(ys: Any) -> tuple[list[str], dict[str, str]]:
    """Loss names and the caller-given gradient of each (Caffe2's list / dict forms)."""
    if isinstance(ys, Mapping):
        return [str(y) for y in ys], {str(y): str(g) for y, g in ys.items() if g is not None}
    if isinstance(ys, (str, bytes)) or not isinstance(ys, Iterable):
        return [ys.decode() if isinstance(ys, bytes) else str(ys)], {}
    return [str(y) for y in ys], {}


def add_backward_pass(net_def: pb.NetDef, ys: Any, skip: int = 0) -> dict[str, str]:
    """Append the gradient ops of ``net_def`` for ``ys`` (blob, list, or blob -> given gradient dict).

    Returns:
        blob name -> gradient blob name, for every blob that got a gradient.
    """
    losses, given = _split_ys(ys)
    # Given gradients are read where the seed would be (also inside control-flow gradient sub-nets).
    return add_gradient_ops(net_def, losses, skip=skip, given=given)


CaffeMaker = Callable[[pb.OperatorDef, list[Any]], tuple[Any, Sequence[Any]]]


class GradientRegistry:
    """Caffe2's ``core.GradientRegistry``: Python gradient makers and the backward pass of op lists."""

    @classmethod
    def RegisterGradient(cls, op_type: str) -> Callable[[CaffeMaker], CaffeMaker]:
        """Register a Caffe2-style maker ``f(op, g_output) -> (grad ops, g_input)`` for ``op_type``.

        As for Caffe2's Python makers, nothing of the forward op (arguments, device,
        engine) is copied onto the gradient ops: the maker does what it needs.
        """

        def deco(func: CaffeMaker) -> CaffeMaker:
            def maker(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
                ops, g_in = func(op, g_out)
                if ops is None:
                    ops = []
                elif isinstance(ops, pb.OperatorDef):
                    ops = [ops]
                names = [None if g is None else str(g) for g in g_in]
                return GradientSpec([copy.deepcopy(o) for o in ops], names)

            _register_gradient(op_type, copy_arguments=False, copy_device_option=False, copy_engine=False)(maker)
            return func

        return deco

    @classmethod
    def GetGradientForOp(cls, op: pb.OperatorDef, g_output: Sequence[Any]) -> tuple[list[pb.OperatorDef], list[Any]]:
        """The gradient ops of one op and the gradient of each of its inputs (None: no gradient).

        Sparse gradients (the SparseLengths* / Sparse*Segment* data input) are returned as Caffe2
        did: a ``GradientSlice(indices, values)`` without the op that densifies them.
        """
        spec = gradient_for_op(op, [None if g is None else str(g) for g in g_output])
        ops, slices = _split_sparse(list(spec.ops), {g for g in spec.grad_inputs if g})
        return ops, [slices.get(g, g) if g else g for g in spec.grad_inputs]

    @classmethod
    def GetBackwardPass(
        cls, operators: Sequence[pb.OperatorDef], ys: Any
    ) -> tuple[list[pb.OperatorDef], dict[Any, Any]]:
        """The gradient ops of ``operators`` for ``ys`` and the blob -> gradient map.

        ``ys`` is a list (each seeded with ``<y>_autogen_grad``) or a dict of given gradients.
        Keys and values of the map are ``BlobReference``s, as in Caffe2 (they compare and hash
        like their names, so lookups by string still work).
        """
        from asyncnet.compat.blob_reference import BlobReference

        if isinstance(ys, (str, bytes)):
            raise ArgumentError(f"GetBackwardPass takes a list or dict of blobs, got the string {ys!r}")
        if not ys:
            return [], {}
        from asyncnet.compat.core_extra import GradientSlice

        net_def = pb.NetDef(name="backward_pass")
        net_def.op.extend(operators)
        grad_map = add_backward_pass(net_def, ys)
        ops, slices = _split_sparse(list(net_def.op[len(operators) :]), set(grad_map.values()))
        refs: dict[Any, Any] = {}
        for k, v in grad_map.items():
            sl = slices.get(v)
            refs[BlobReference(k)] = (
                BlobReference(v) if sl is None else GradientSlice(BlobReference(sl.indices), BlobReference(sl.values))
            )
        return ops, refs


def _split_sparse(ops: list[pb.OperatorDef], final_grads: set[str]) -> tuple[list[pb.OperatorDef], dict[str, Any]]:
    """Drop the ops that densify a sparse gradient (``SparseToDense(indices, <g>_values, data) -> <g>``,
    as asyncnet's sparse segment gradient makers emit) when nothing else reads ``<g>``; return the
    remaining ops and ``<g> -> GradientSlice(indices, values)``."""
    from asyncnet.compat.core_extra import GradientSlice

    slices: dict[str, Any] = {}
    keep: list[pb.OperatorDef] = []
    for i, op in enumerate(ops):
        out = op.output[0] if len(op.output) == 1 else ""
        if (
            op.type == "SparseToDense"
            and op.is_gradient_op
            and len(op.input) == 3
            and out in final_grads
            and op.input[1] == f"{out}_values"
            and not any(out in later.input for later in ops[i + 1 :])
        ):
            slices[out] = GradientSlice(op.input[0], op.input[1])
            continue
        keep.append(op)
    return keep, slices
