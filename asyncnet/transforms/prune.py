"""Dropping ops that are the identity at inference: Dropout(is_test=1), Alias, Copy and friends.

An identity op X -> Y goes away when that cannot change what any op or the caller sees:

* in place (Y == X): always;
* else, readers of Y read X instead, when Y has no other writer, X is not written after the op and Y
  is not an external input or output;
* else (Y is an external output), X's only producer writes Y directly, when X is an intermediate
  blob that nothing else needs under its own name.
"""

from __future__ import annotations

from asyncnet.transforms._graph import Graph

#: single-input, single-output ops whose output equals their input in inference.
IDENTITY_OPS = frozenset({"Alias", "AliasWithName", "Copy", "EnsureCPUOutput", "EnsureDense", "StopGradient"})


def _identity_kind(g: Graph, index: int) -> str | None:
    op = g.ops[index]
    if len(op.input) != 1 or not op.output or op.control_input:
        return None
    if op.type == "Dropout":
        if not g.args(index).get("is_test", 0):
            return None
        if len(op.output) == 2:
            mask = op.output[1]
            if g.readers(mask) or mask in g.external_outputs or mask == op.input[0]:
                return None
        return "drop_dropout"
    if op.type in IDENTITY_OPS and len(op.output) == 1:
        return "drop_identity"
    return None


def _try_drop(g: Graph, k: int, kind: str) -> bool:
    op = g.ops[k]
    x, y = op.input[0], op.output[0]
    label = g.labels[k]
    if x == y:
        g.remove_op(k)
        g.record(kind, [label], "removed (in place)")
        return True
    if y in g.external_inputs or g.writers(y) != [k] or any(r <= k for r in g.readers(y)):
        return False
    if any(w > k for w in g.writers(x)):
        return False
    if y not in g.external_outputs:
        g.rename_reads(y, x, k + 1)
        g.remove_op(k)
        g.record(kind, [label], f"removed; readers of '{y}' read '{x}'")
        return True
    # Y must keep its name: let X's producer write Y, if X is a private intermediate.
    producers = g.writers(x)
    if (
        len(producers) != 1
        or x in g.external_inputs
        or x in g.external_outputs
        or x in g.params
        or y in g.nested
        or any(r < producers[0] for r in g.readers(x))
    ):
        return False
    p = producers[0]
    if g.touched_between(y, p, k) or x in g.ops[p].input:
        return False
    prod = g.ops[p]
    for j, n in enumerate(prod.output):
        if n == x:
            prod.output[j] = y
    g.rename_reads(x, y, p + 1)
    g.remove_op(k)
    g.record(kind, [label], f"removed; '{g.labels[p]}' writes '{y}' directly")
    return True


def drop_identities(g: Graph) -> None:
    """Remove Dropout(is_test=1) and identity ops where safe (see the module doc)."""
    k = 0
    while k < len(g.ops):
        kind = _identity_kind(g, k)
        if kind is not None and _try_drop(g, k, kind):
            continue
        k += 1
