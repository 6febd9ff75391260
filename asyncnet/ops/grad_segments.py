"""Gradient makers of segment / packing ops whose gradient is another existing forward op.

Each follows the gradient definition Caffe2 registered (and saved in its serialized goldens):
SplitByLengths -> Concat, PackSegments -> UnpackSegments, ReversePackedSegs -> itself,
NegateGradient -> Negative.
"""

from __future__ import annotations

from asyncnet.errors import GradientError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.training.gradients import GradientContext, GradientSpec, register_gradient


@register_gradient("SplitByLengths", copy_arguments=False)
def _split_by_lengths_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    missing = [str(op.output[i]) for i in range(len(op.output)) if not g.has_go(i)]
    if missing:
        raise GradientError(
            f"SplitByLengths '{op.output[0]}': every output needs a gradient to concatenate, missing for {missing}"
        )
    # Concat's default axis is 1, SplitByLengths' is 0: always spelled out.
    args = {"axis": g.arg("axis", 0)}
    dims = f"_{g.I(0)}_grad_dims"
    return g.spec([g.op_def("Concat", [g.GO(i) for i in range(len(op.output))], [g.GI(0), dims], args)])


@register_gradient("PackSegments", copy_arguments=False)
def _pack_segments_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    args = {"max_length": g.arg("max_length")} if g.has_arg("max_length") else {}
    return g.spec([g.op_def("UnpackSegments", [g.I(0), g.GO(0)], [g.GI(1)], args)])


@register_gradient("ReversePackedSegs")
def _reverse_packed_segs_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("ReversePackedSegs", [g.GO(0), g.I(1)], [g.GI(0)])])


@register_gradient("NegateGradient")
def _negate_gradient_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("Negative", [g.GO(0)], [g.GI(0)])])
