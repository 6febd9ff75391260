"""Gradients of the control-flow ops Do and If (Caffe2's ``control_ops_grad``), While in control_grad_while.

A gradient ``Do`` runs the backward pass of the forward ``Do``'s net in the child workspace the
forward ``Do`` left on the scope blob's stack (the forward step's local blobs are read from there,
``saved_fwd_blobs`` lists them); it pops that workspace. Outer gradients are bound into it under
``<inner>/_DO_OPERATOR_INNER_GRAD_`` and the input gradients leave it through
``<inner>/_DO_OPERATOR_INNER_GRAD_COPY_`` bound to ``<outer>_grad`` (Caffe2's names).

A gradient ``If`` holds the backward passes of both branches; a gradient a branch does not
compute (the branch did not read that input) is zero-filled, or copied from the output
gradient when the input is also an output the branch left untouched.

Errors while building a sub-net's backward pass name the inner op and, through the caller,
the outer op: ``op #2 If: in its then_net 'branch': op #0 Foo: no gradient ...``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from asyncnet.errors import GradientError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import argument_value, make_argument
from asyncnet.training.gradients import GradientSpec, backward_pass, register_gradient, register_output_renamer

__all__ = ["DoBindings", "do_bindings", "net_arg", "subnet_gradient"]

INNER_GRAD = "/_DO_OPERATOR_INNER_GRAD_"
INNER_GRAD_COPY = "/_DO_OPERATOR_INNER_GRAD_COPY_"
# A forward Do keeps, under this suffix, the incoming value of every bound blob its net reads and
# then overwrites (loop-carried state, in-place updates in a branch).
FORWARD_INPUT = "/_DO_FORWARD_INPUT_"


def _name(op: pb.OperatorDef) -> str:
    return f"{op.type} '{op.name}'" if op.name else f"{op.type} op writing {list(op.output)}"


def net_arg(op: pb.OperatorDef, name: str) -> pb.NetDef | None:
    """The NetDef argument ``name`` of ``op`` (None when absent)."""
    for a in op.arg:
        if a.name == name:
            if not a.HasField("n"):
                raise GradientError(f"{_name(op)}: argument '{name}' must be a NetDef")
            return a.n
    return None


def _list_arg(op: pb.OperatorDef, name: str) -> list[object]:
    for a in op.arg:
        if a.name == name:
            value = argument_value(a)
            return list(value) if isinstance(value, list) else [value]
    return []


@dataclass
class DoBindings:
    """A forward Do's net and its blob bindings (inner <-> outer names), scope blob excluded."""

    net: pb.NetDef
    outer_to_inner: dict[str, str]
    inner_to_outer: dict[str, str]
    scope_blob: str


def do_bindings(op: pb.OperatorDef) -> DoBindings:
    """Check a Do op the way its gradient needs it (a bijection of bound names) and return its bindings."""
    net = net_arg(op, "net")
    if net is None:
        raise GradientError(f"{_name(op)}: a Do op needs a 'net' argument")
    inner = [v.decode() if isinstance(v, bytes) else str(v) for v in _list_arg(op, "inner_blobs")]
    idx = [int(str(i)) for i in _list_arg(op, "outer_blobs_idx")]
    if len(inner) != len(idx):
        raise GradientError(f"{_name(op)}: inner_blobs has {len(inner)} names, outer_blobs_idx {len(idx)}")
    if len(set(inner)) != len(inner):
        raise GradientError(f"{_name(op)}: inner_blobs has duplicates: {inner}")
    if not op.input or not op.output or op.input[-1] != op.output[-1]:
        raise GradientError(f"{_name(op)}: the last input and output must be the same scope blob")
    ins, outs = list(op.input[:-1]), list(op.output[:-1])
    if len(set(ins)) != len(ins) or len(set(outs)) != len(outs):
        raise GradientError(f"{_name(op)}: its gradient needs inputs and outputs without duplicates")
    ordered = ins + outs
    o2i: dict[str, str] = {}
    i2o: dict[str, str] = {}
    for name, i in zip(inner, idx):
        if not 0 <= i < len(ordered):
            raise GradientError(f"{_name(op)}: outer_blobs_idx {i} is out of range (outer blobs: {ordered})")
        outer = ordered[i]
        if outer in o2i:
            raise GradientError(f"{_name(op)}: outer blob '{outer}' is bound twice ('{o2i[outer]}', '{name}')")
        o2i[outer] = name
        i2o[name] = outer
    unbound = [b for b in dict.fromkeys(ordered) if b not in o2i]
    if unbound:
        raise GradientError(f"{_name(op)}: its gradient needs every input and output bound; unbound: {unbound}")
    return DoBindings(net, o2i, i2o, op.output[-1])


def _copy(src: str, dst: str) -> pb.OperatorDef:
    return pb.OperatorDef(type="Copy", input=[src], output=[dst], is_gradient_op=True)


def zeros_like(blob: str, out: str) -> pb.OperatorDef:
    """Zeros shaped and typed like ``blob`` (Caffe2 used ConstantFill, which makes float32)."""
    fill = pb.OperatorDef(type="Scale", input=[blob], output=[out], is_gradient_op=True)
    fill.arg.append(make_argument("scale", 0.0))
    return fill


def dedupe_grad_outputs(
    op: pb.OperatorDef, g_out: Sequence[str | None]
) -> tuple[list[pb.OperatorDef], list[str | None]]:
    """One distinct gradient blob per output (a sub-net's bindings need a bijection); Copy ops where shared."""
    ops: list[pb.OperatorDef] = []
    out: list[str | None] = []
    chosen: dict[str, str] = {}
    for name, g in zip(op.output, g_out):
        if not g:
            out.append(g)
        elif name in chosen:
            out.append(chosen[name])
        elif g not in chosen.values():
            chosen[name] = g
            out.append(g)
        else:
            new = f"{name}_{g}_DEDUP"
            ops.append(_copy(g, new))
            chosen[name] = new
            out.append(new)
    out.extend([None] * (len(op.output) - len(out)))
    return ops, out


@dataclass
class SubnetGradient:
    """The backward pass of a sub-net: its net, blob -> gradient map, and what it reads and writes."""

    net: pb.NetDef
    grads: dict[str, str]
    inputs: list[str]
    outputs: list[str]


def subnet_gradient(net: pb.NetDef, init: Mapping[str, str], *, role: str) -> SubnetGradient:
    """Backward pass of ``net``'s ops for the given output gradients, as a NetDef (errors name ``role``)."""
    try:
        ops, grads = backward_pass(list(net.op), init)
    except GradientError as e:
        raise GradientError(f"in its {role} '{net.name}': {e}") from e
    written: set[str] = set()
    inputs: dict[str, None] = {}
    outputs: dict[str, None] = {}
    for g in ops:
        for name in g.input:
            if name not in written:
                inputs[name] = None
        written.update(g.output)
        outputs.update(dict.fromkeys(g.output))
    grad_net = pb.NetDef()
    grad_net.CopyFrom(net)
    if grad_net.name:
        grad_net.name += "_grad"
    del grad_net.op[:]
    grad_net.op.extend(ops)
    del grad_net.external_input[:]
    del grad_net.external_output[:]
    return SubnetGradient(grad_net, grads, list(inputs), list(outputs))


# ---------------------------------------------------------------------------
# Do


def overwritten_before_read(net: pb.NetDef) -> set[str]:
    """Names the net writes before (or without) ever reading them: their incoming value does not matter."""
    read: set[str] = set()
    out: set[str] = set()
    for o in net.op:
        read.update(n for n in o.input if n not in out)
        out.update(n for n in o.output if n not in read)
    return out


def _has_subnet(op: pb.OperatorDef) -> bool:
    return any(a.HasField("n") or len(a.nets) > 0 for a in op.arg)


def read_then_written(net: pb.NetDef) -> set[str]:
    """Names an op reads with their incoming value and a later op overwrites (loop-carried state).

    Ops running sub-nets (If, Do...) are left out: their own forward runs keep what their
    gradients need, and their inputs only declare what the sub-nets read.
    """
    seen: set[str] = set()
    plain: set[str] = set()
    written: set[str] = set()
    for o in net.op:
        for n in o.input:
            if n not in written and n not in seen:
                seen.add(n)
                if not _has_subnet(o):
                    plain.add(n)
        written.update(o.output)
    return plain & written


def rename_incoming_reads(net: pb.NetDef, names: set[str]) -> pb.NetDef:
    """A copy of ``net`` whose reads of ``names`` before their first write read ``<name>`` + FORWARD_INPUT."""
    out = pb.NetDef()
    out.CopyFrom(net)
    written: set[str] = set()
    for o in out.op:
        if not _has_subnet(o):
            new = [n + FORWARD_INPUT if n in names and n not in written else n for n in o.input]
            del o.input[:]
            o.input.extend(new)
        written.update(o.output)
    return out


@register_gradient("Do", copy_arguments=False, copy_engine=False)
def _do_gradient(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    ops, g_in = gradient_do(op, g_out)
    return GradientSpec(ops, g_in)


def gradient_do(
    op: pb.OperatorDef, g_out: Sequence[str | None], export: Callable[[str], str] = lambda outer: outer + "_grad"
) -> tuple[list[pb.OperatorDef], list[str | None]]:
    """The gradient Do of a forward Do: (ops, gradient blob per input); ``export`` names the input gradients."""
    b = do_bindings(op)
    pre, g_out = dedupe_grad_outputs(op, g_out)
    init_inner: dict[str, str] = {}  # inner output -> inner name of its gradient
    init_outer: dict[str, str] = {}  # that inner name -> the outer gradient blob
    for outer, g in zip(op.output[:-1], g_out):
        if g:
            inner = b.outer_to_inner[outer]
            init_inner[inner] = inner + INNER_GRAD
            init_outer[inner + INNER_GRAD] = g
    if not init_inner:
        raise GradientError("no output of this Do op has a gradient")
    # The forward Do kept the incoming values of the bound blobs its net reads and then
    # overwrites: the backward pass reads those (the bound names hold the values after the run).
    carried = read_then_written(b.net) & set(b.inner_to_outer)
    body = rename_incoming_reads(b.net, carried) if carried else b.net
    sub = subnet_gradient(body, init_inner, role="net")
    if not sub.net.op:
        return pre, [None] * len(op.input)
    # An input the net overwrites before reading gets no gradient (the map holds its new value's).
    clobbered = overwritten_before_read(b.net)

    bindings: dict[str, str] = {}  # inner name -> outer name
    copies: list[pb.OperatorDef] = []
    new_outputs: list[str] = []
    g_in: list[str | None] = []
    for outer in op.input[:-1]:
        inner = b.outer_to_inner[outer]
        key = inner + FORWARD_INPUT if inner in carried else inner
        if key in sub.grads and inner not in clobbered:
            # A fresh inner name per exported gradient: one inner gradient blob may be the
            # gradient of several outer blobs (y = x + z: x and z share y's gradient).
            exported = inner + INNER_GRAD_COPY
            copies.append(_copy(sub.grads[key], exported))
            bindings[exported] = export(outer)
            new_outputs.append(export(outer))
            g_in.append(export(outer))
        else:
            g_in.append(None)
    g_in.append(None)  # the scope blob

    new_inputs: list[str] = []
    saved: dict[str, None] = {}
    overwritten: set[str] = set()
    for gop in sub.net.op:
        for name in gop.input:
            if name in overwritten:
                continue
            outer_name = b.inner_to_outer.get(name) or init_outer.get(name)
            if outer_name:
                if outer_name not in new_inputs:
                    new_inputs.append(outer_name)
                bindings[name] = outer_name
            else:
                saved[name] = None  # a local blob of the forward run, read from its workspace
        overwritten.update(gop.output)
    sub.net.op.extend(copies)
    # Declare what the net reads from the bindings and the forward run (checkers follow dataflow).
    sub.net.external_input.extend(n for n in sub.inputs if n not in sub.net.external_input)

    ordered = new_inputs + new_outputs
    inner_blobs = list(bindings)
    grad_do = pb.OperatorDef(
        type="Do",
        name=op.name + "_grad" if op.name else "",
        input=[*new_inputs, b.scope_blob],
        output=[*new_outputs, b.scope_blob],
        is_gradient_op=True,
    )
    grad_do.arg.append(make_argument("net", sub.net))
    grad_do.arg.append(make_argument("inner_blobs", inner_blobs))
    grad_do.arg.append(make_argument("outer_blobs_idx", [ordered.index(bindings[n]) for n in inner_blobs]))
    grad_do.arg.append(make_argument("saved_fwd_blobs", list(saved)))
    return [*pre, grad_do], g_in


# ---------------------------------------------------------------------------
# If


def _zero_fill(
    init: Mapping[str, str], grads: Mapping[str, str], blobs: Sequence[str], missing: set[str]
) -> list[pb.OperatorDef]:
    """Ops the other branch runs so that gradients only this branch computes still get a value."""
    ops: list[pb.OperatorDef] = []
    for blob in blobs:
        g = grads.get(blob)
        if g is None or g not in missing:
            continue
        if blob in init:
            if init[blob] != g:
                ops.append(_copy(init[blob], g))  # the other branch leaves the output untouched
        else:
            ops.append(zeros_like(blob, g))
    return ops


@register_gradient("If", copy_arguments=False, copy_engine=False)
def _if_gradient(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    if not op.input:
        raise GradientError("an If op needs its condition as input 0")
    pre, g_out = dedupe_grad_outputs(op, g_out)
    init = {o: g for o, g in zip(op.output, g_out) if g}
    if not init:
        raise GradientError("no output of this If op has a gradient")
    then_def = net_arg(op, "then_net")
    if then_def is None:
        raise GradientError("an If op needs a then_net argument")
    then = subnet_gradient(then_def, init, role="then_net")
    grads = dict(then.grads)
    else_def = net_arg(op, "else_net")
    other = subnet_gradient(else_def, init, role="else_net") if else_def is not None else None
    if other is not None:
        for blob, eg in other.grads.items():
            tg = then.grads.get(blob)
            if tg is None or tg == eg:
                grads[blob] = eg
            elif tg == init.get(blob):
                grads[blob] = eg
            elif eg != init.get(blob):
                raise GradientError(
                    f"the branches name the gradient of '{blob}' differently ('{tg}' in then_net, '{eg}' in else_net)"
                )
    # Only the gradients the If exports (of its inputs) must exist whichever branch ran.
    exported = [b for b in dict.fromkeys(op.input[1:])]
    else_outputs = set(other.outputs) if other is not None else set()
    zero_for_else = _zero_fill(init, then.grads, exported, set(then.outputs) - else_outputs)
    zero_for_then = (
        _zero_fill(init, other.grads, exported, else_outputs - set(then.outputs)) if other is not None else []
    )
    then.net.op.extend(zero_for_then)
    else_net: pb.NetDef | None = other.net if other is not None else None
    if zero_for_else:
        if else_net is None:
            else_net = pb.NetDef()
            else_net.CopyFrom(then.net)
            if else_net.name:
                else_net.name += "_auto_else_zero_blobs_"
            del else_net.op[:]
        else_net.op.extend(zero_for_else)

    # Blobs only a forward branch writes exist only when that branch ran: the gradient If reads
    # them from the workspace but must not declare them (the executor would demand them).
    declared = set(op.input) | set(op.output)
    branch_local = {
        o for d in (then_def, else_def) if d is not None for f in d.op for o in f.output if o not in declared
    }
    cond = op.input[0]
    names_in = [cond]
    names_out: list[str] = []
    for net in (then.net, else_net):
        if net is None:
            continue
        written: set[str] = set()
        for g in net.op:
            names_in.extend(n for n in g.input if n not in written and n not in names_in and n not in branch_local)
            written.update(g.output)
            names_out.extend(n for n in g.output if n not in names_out)
    grad_if = pb.OperatorDef(
        type="If",
        name=op.name + "_grad" if op.name else "",
        input=names_in,
        output=names_out,
        is_gradient_op=True,
    )
    grad_if.arg.append(make_argument("then_net", then.net))
    if else_net is not None:
        grad_if.arg.append(make_argument("else_net", else_net))
    g_in: list[str | None] = [None, *(grads.get(b) for b in op.input[1:])]
    return GradientSpec([*pre, grad_if], g_in)


def rename_if_output(op: pb.OperatorDef, idx: int, new_name: str) -> None:
    """Rename output ``idx`` of a gradient If, also where its branches' ops write it (Caffe2's disambiguate)."""
    old = op.output[idx]
    for role in ("then_net", "else_net"):
        net = net_arg(op, role)
        if net is None:
            continue
        for inner in net.op:
            for i, out in enumerate(inner.output):
                if out == old:
                    inner.output[i] = new_name
    op.output[idx] = new_name


register_output_renamer("If", rename_if_output)
