"""Fusing a Relu into the Conv, FC or Sum that produces its input (ConvRelu, FCRelu, SumRelu).

The fused op runs the base kernel and applies the Relu in place on that kernel's fresh output, so it
is only made when the Relu is the sole reader of the producer's output: a blob that another op (or
the caller, as an external output) reads before the Relu keeps its own op.
"""

from __future__ import annotations

from asyncnet.transforms._graph import Graph
from asyncnet.transforms.fold import CONV_TYPES

FUSED_TYPE = {**{t: "ConvRelu" for t in CONV_TYPES}, "FC": "FCRelu", "Sum": "SumRelu"}


def _try_fuse(g: Graph, i: int) -> bool:
    op = g.ops[i]
    if len(op.output) != 1:
        return False
    y = op.output[0]
    readers = g.value_readers(i, y)
    if len(readers) != 1:
        return False
    j = readers[0]
    relu = g.ops[j]
    if relu.type != "Relu" or list(relu.input) != [y] or len(relu.output) != 1 or relu.control_input:
        return False
    z = relu.output[0]
    if z != y and y in g.external_outputs and g.is_final_write(i, y):
        return False
    if z != y:
        if g.touched_between(z, i, j) or z in g.external_inputs:
            return False
        # Only Sum may write one of its inputs; a Conv/FC output must not overwrite its input.
        if z in op.input and op.type != "Sum":
            return False
    fused = FUSED_TYPE[op.type]
    labels = [g.labels[i], g.labels[j]]
    op.type = fused
    op.output[0] = z
    g.labels[i] = f"{g.labels[i]} (+Relu)"
    g.remove_op(j)
    g.record("fuse_relu", labels, f"{fused} writes '{z}'")
    return True


def fuse_relu(g: Graph) -> None:
    """Turn Conv/FC/Sum followed by its sole reader Relu into ConvRelu/FCRelu/SumRelu."""
    i = 0
    while i < len(g.ops):
        if g.ops[i].type in FUSED_TYPE:
            _try_fuse(g, i)
        i += 1
