"""Caffe2's ``control_ops_util``: ``add_if_op`` and ``add_while_op`` over Do-wrapped sub-nets.

As in Caffe2, the blobs of a branch or loop body whose names are in ``lexical_scope`` (or that
it reads before writing) are outer blobs; every other blob lives only in the body's own child
workspace (a ``Do`` op with a scope blob made by ``CreateScope``).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from asyncnet.compat.core import BlobReference, Net
from asyncnet.errors import NetDefinitionError
from asyncnet.proto import caffe2_pb2 as pb

__all__ = ["add_if_op", "add_while_op", "get_external_blob_names"]


def get_external_blob_names(net: Net, lexical_scope: Collection[str]) -> tuple[set[str], set[str]]:
    """(blobs the net reads before writing them, blobs it writes that are in ``lexical_scope``)."""
    proto = net.Proto()
    written: set[str] = set()
    inputs: set[str] = set()
    for op in proto.op:
        for name in op.input:
            if name not in written:
                inputs.add(name)
        written.update(op.output)
    scope = {str(s) for s in lexical_scope}
    undefined = sorted(n for n in inputs if n not in scope)
    if undefined:
        raise NetDefinitionError(
            f"net '{proto.name}' reads blob(s) {undefined} that are neither written before nor in the lexical scope"
        )
    outputs = {o for op in proto.op for o in op.output if o in scope}
    return inputs, outputs


def _do_net(
    name: str,
    body: Net,
    ins: list[str],
    outs: list[str],
    workspace_blob: str,
    *,
    copy_external: bool = False,
    reuse: bool = False,
) -> Net:
    """A net holding one Do op that runs ``body`` in a child workspace bound to the outer blobs."""
    ordered = [*ins, *outs]
    outer = sorted(set(ins) | set(outs))
    do_net = Net(name)
    do_net.Do(
        [*ins, workspace_blob],
        [*outs, workspace_blob],
        net=body.Proto(),
        inner_blobs=outer,
        outer_blobs_idx=[ordered.index(b) for b in outer],
        **({"copy_external_blobs": True} if copy_external else {}),
        **({"reuse_workspace": True} if reuse else {}),
    )
    do_net.AddExternalOutput(*[BlobReference(b) for b in [*outs, workspace_blob]])
    return do_net


def add_if_op(
    if_net: Net, cond_blob: Any, lexical_scope: Collection[str], then_net: Net, else_net: Net | None = None
) -> None:
    """Add ``If(cond_blob)`` running ``then_net`` / ``else_net`` each in its own child workspace."""
    t_in, t_out = get_external_blob_names(then_net, lexical_scope)
    e_in, e_out = get_external_blob_names(else_net, lexical_scope) if else_net is not None else (set(), set())
    if_inputs = [str(cond_blob), *sorted(t_in | e_in)]
    if_outputs = sorted(t_out | e_out)
    then_ws = str(if_net.NextScopedBlob(if_net.Name() + "/workspace_if_then"))
    args: dict[str, Any] = {"then_net": _do_net("do_then_net", then_net, sorted(t_in), sorted(t_out), then_ws).Proto()}
    scopes = [then_ws]
    if else_net is not None:
        else_ws = str(if_net.NextScopedBlob(if_net.Name() + "/workspace_if_else"))
        args["else_net"] = _do_net("do_else_net", else_net, sorted(e_in), sorted(e_out), else_ws).Proto()
        scopes.append(else_ws)
    for ws_blob in scopes:
        if_net.CreateScope([], [ws_blob])
    if_net.If([*if_inputs, *scopes], [*if_outputs, *scopes], **args)
    if_net.AddExternalOutput(*[BlobReference(b) for b in if_outputs])


def add_while_op(
    while_net: Net,
    cond_blob: Any,
    lexical_scope: Collection[str],
    loop_body_net: Net,
    condition_body_net: Net | None = None,
) -> None:
    """Add ``While(cond_blob)`` whose body (and optional condition net) run in child workspaces.

    The condition net must write ``cond_blob``; without one the body must update it.
    """
    b_in, b_out = get_external_blob_names(loop_body_net, lexical_scope)
    b_in |= b_out  # the loop may run zero times: its outputs keep their old values
    body_ws = str(while_net.NextScopedBlob(while_net.Name() + "/workspace_loop_body"))
    args: dict[str, Any] = {
        "loop_net": _do_net(
            "do_loop_body_net", loop_body_net, sorted(b_in), sorted(b_out), body_ws, copy_external=True
        ).Proto()
    }
    inputs = [str(cond_blob), *sorted(b_in)]
    outputs = sorted(b_out)
    scopes = [body_ws]
    if condition_body_net is not None:
        c_in, c_out = get_external_blob_names(condition_body_net, lexical_scope)
        if not any(str(cond_blob) in op.output for op in condition_body_net.Proto().op):
            raise NetDefinitionError(f"condition net '{condition_body_net.Name()}' does not write '{cond_blob}'")
        c_out.add(str(cond_blob))
        cond_ws = str(while_net.NextScopedBlob(while_net.Name() + "/workspace_cond"))
        # The condition is not differentiated: one reused workspace instead of one per check
        # (a pushed workspace per check would pile up on the scope blob run after run).
        args["cond_net"] = _do_net(
            "do_cond_net", condition_body_net, sorted(c_in), sorted(c_out), cond_ws, reuse=True
        ).Proto()
        inputs += [b for b in sorted(c_in) if b not in inputs]
        outputs += [b for b in sorted(c_out) if b not in outputs]
        scopes.append(cond_ws)
        if str(cond_blob) not in {str(b) for b in lexical_scope}:
            # The condition net makes it; it must exist before the While reads it (as Caffe2).
            while_net.ConstantFill([], str(cond_blob), shape=[], dtype=pb.TensorProto.BOOL, value=False)
    for ws_blob in scopes:
        while_net.CreateScope([], [ws_blob])
    while_net.While([*inputs, *scopes], [*outputs, *scopes], **args)
    while_net.AddExternalOutput(*[BlobReference(b) for b in outputs])
