"""Gradient of While (Caffe2's ``gen_while_gradient``, with gradients that add up over iterations).

As in Caffe2 the loop body must be a single ``Do`` op (no ``reuse_workspace``): every forward
iteration leaves a workspace on the body's scope blob, and the gradient is a ``While`` whose
condition is ``HasScope`` on that blob and whose body is the gradient ``Do`` popping one of them per
iteration, last iteration first. The forward ``Do`` must keep each iteration's values of the blobs
it writes (``copy_external_blobs``, which :func:`asyncnet.compat.control_ops_util.add_while_op`
sets): later iterations overwrite the outer blobs.

Where Caffe2's version overwrote gradients per iteration, here

* a blob the body reads and writes (loop-carried state) passes its gradient from one backward
  iteration to the next (the output gradient of iteration k is the input gradient of k + 1),
* a blob the body reads but never writes (a weight) sums its gradient over all iterations,
* a blob the body overwrites without reading gets no gradient from earlier iterations (zero),

so the result equals the unrolled loop's gradient (tested against finite differences). A
``cond_net`` must not write differentiated blobs (it is not differentiated).
"""

from __future__ import annotations

from asyncnet.errors import GradientError
from asyncnet.ops.control_grad import (
    dedupe_grad_outputs,
    do_bindings,
    gradient_do,
    net_arg,
    overwritten_before_read,
    zeros_like,
)
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import argument_value, make_argument
from asyncnet.training.gradients import GradientSpec, register_gradient

RUNNING = "/_WHILE_GRAD_"
ITERATION = "/_WHILE_GRAD_ITER_"


def _op(op_type: str, inputs: list[str], outputs: list[str], **args: object) -> pb.OperatorDef:
    o = pb.OperatorDef(type=op_type, input=inputs, output=outputs, is_gradient_op=True)
    for k, v in args.items():
        o.arg.append(make_argument(k, v))
    return o


def _flag(op: pb.OperatorDef, name: str) -> bool:
    return any(a.name == name and bool(argument_value(a)) for a in op.arg)


def _body(op: pb.OperatorDef) -> pb.OperatorDef:
    loop = net_arg(op, "loop_net")
    if loop is None:
        raise GradientError("a While op needs a loop_net argument")
    if len(loop.op) != 1 or loop.op[0].type != "Do":
        raise GradientError(
            "the gradient of While needs a loop_net holding a single Do op (as Caffe2's; "
            "control_ops_util.add_while_op and net_builder's WhileNet build one), "
            f"got ops {[o.type for o in loop.op]}"
        )
    do = loop.op[0]
    if _flag(do, "reuse_workspace"):
        raise GradientError("the gradient of While needs its body Do without reuse_workspace")
    if len(do.output) > 1 and not _flag(do, "copy_external_blobs"):
        raise GradientError(
            "the gradient of While needs its body Do to keep each iteration's values: set copy_external_blobs=1 "
            "(control_ops_util.add_while_op does)"
        )
    return do


def _written_by(net: pb.NetDef | None) -> set[str]:
    if net is None:
        return set()
    out: set[str] = set()
    for o in net.op:
        out.update(o.output)
        if o.type == "Do":  # a Do-wrapped condition writes its outer outputs
            out.update(o.output[:-1])
    return out


@register_gradient("While", copy_arguments=False, copy_engine=False)
def _while_gradient(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    do = _body(op)
    b = do_bindings(do)
    pre, g_out = dedupe_grad_outputs(op, g_out)
    given = {o: g for o, g in zip(op.output, g_out) if g}
    body_in = list(do.input[:-1])
    body_out = list(do.output[:-1])
    clobbered = {outer for outer in body_out if b.outer_to_inner[outer] in overwritten_before_read(b.net)}
    carried = [o for o in body_out if o not in clobbered and o in body_in]
    weights = [i for i in body_in if i not in set(body_out)]

    # Which body outputs carry a gradient: the given ones, then every carried blob whose input
    # gradient a backward iteration computes (it is the previous iteration's output gradient).
    needed = [o for o in body_out if o in given]
    if not needed:
        raise GradientError("no output of this While op that its body writes has a gradient")
    while True:
        do_g = [f"{o}{RUNNING}" if o in needed else None for o in do.output]
        try:
            grad_ops, g_in = gradient_do(do, do_g, export=lambda outer: outer + ITERATION)
        except GradientError as e:
            raise GradientError(f"in its loop_net's Do op: {e}") from e
        exported = {i: g for i, g in zip(body_in, g_in) if g}
        more = [c for c in carried if c in exported and c not in needed]
        if not more:
            break
        needed.extend(more)

    touched = _written_by(net_arg(op, "cond_net")) - {op.input[0]}
    bad = sorted(touched & (set(needed) | set(exported)))
    if bad:
        raise GradientError(f"its cond_net writes {bad}, which get gradients; only the loop body is differentiated")

    cond = f"{b.scope_blob}/_WHILE_GRAD_COND_"
    for o in needed:
        if o in given:
            pre.append(_op("Copy", [given[o]], [o + RUNNING]))
        else:
            pre.append(zeros_like(o, o + RUNNING))
    summed = [w for w in weights if w in exported]
    for w in summed:
        pre.append(zeros_like(w, w + RUNNING))
    pre.append(_op("HasScope", [b.scope_blob], [cond]))

    loop_ops = list(grad_ops)
    for o in needed:
        if o in carried and o in exported:
            loop_ops.append(_op("Copy", [exported[o]], [o + RUNNING]))
        else:  # overwritten by the body: earlier iterations' values never reached the output
            loop_ops.append(zeros_like(o, o + RUNNING))
    for w in summed:
        loop_ops.append(_op("Sum", [exported[w], w + RUNNING], [w + RUNNING]))
    loop_net = pb.NetDef(name=(net_arg(op, "loop_net") or pb.NetDef()).name + "_grad")
    loop_net.op.extend(loop_ops)
    cond_net = pb.NetDef(name=loop_net.name + "_cond")
    cond_net.op.append(_op("HasScope", [b.scope_blob], [cond]))

    written: set[str] = set()
    reads: list[str] = [cond]
    outs: list[str] = []
    for lop in loop_ops:
        reads.extend(n for n in lop.input if n not in written and n not in reads)
        written.update(lop.output)
        outs.extend(n for n in lop.output if n not in outs)
    grad_while = pb.OperatorDef(
        type="While",
        name=op.name + "_grad" if op.name else "",
        input=reads,
        output=outs,
        is_gradient_op=True,
    )
    grad_while.arg.append(make_argument("loop_net", loop_net))
    grad_while.arg.append(make_argument("cond_net", cond_net))

    post: list[pb.OperatorDef] = []
    grads: dict[str, str] = {}
    for x in [*needed, *summed]:
        if x in body_in:
            grads[x] = x + "_grad"
            post.append(_op("Copy", [x + RUNNING], [x + "_grad"]))
    g_inputs: list[str | None] = [grads.get(i) if k > 0 else None for k, i in enumerate(op.input)]
    return GradientSpec([*pre, grad_while, *post], g_inputs)
