"""Dependency analysis of a net: which operator must wait for which, and chains.

Pure functions over operator descriptions; nothing here starts threads or needs
the op registry, so it works on nets whose op types are not implemented.

Edges come from blob names, in NetDef order:

* read-after-write: an op reading ``b`` waits for the last op that wrote ``b``;
* write-after-write: an op writing ``b`` waits for the last writer of ``b``;
* write-after-read: an op writing ``b`` waits for every op that read ``b`` since
  its last write (an in-place op is not its own reader);
* ``control_input`` names count as reads.

Redundant edges (implied through another parent) are pruned, so the executors
do less bookkeeping. A *chain* is a maximal run of ops where each op is the only
child of the previous one and the previous one is its only parent, all on one
device; a chain runs inline on one thread.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Sequence
from dataclasses import dataclass

from asyncnet.opinfo import DeviceKey
from asyncnet.proto import caffe2_pb2 as pb


@dataclass(frozen=True)
class OpNode:
    """What the analysis needs of one operator."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    control_inputs: tuple[str, ...] = ()
    device: Hashable = DeviceKey()
    label: str = ""


@dataclass(frozen=True)
class Graph:
    """Operator DAG plus its chains.

    Attributes:
        parents: per op, the ops it waits for (pruned, ascending).
        children: per op, the ops waiting for it (ascending).
        chains: op indices of each chain in run order; chains are numbered by first op.
        chain_of: per op, its chain number.
        chain_parents: per chain, the chains it waits for.
        chain_children: per chain, the chains waiting for it.
    """

    parents: tuple[tuple[int, ...], ...]
    children: tuple[tuple[int, ...], ...]
    chains: tuple[tuple[int, ...], ...]
    chain_of: tuple[int, ...]
    chain_parents: tuple[tuple[int, ...], ...]
    chain_children: tuple[tuple[int, ...], ...]

    @property
    def num_edges(self) -> int:
        return sum(len(p) for p in self.parents)

    def roots(self) -> list[int]:
        """Chains without parents."""
        return [c for c, p in enumerate(self.chain_parents) if not p]


def nodes_of(net: pb.NetDef) -> list[OpNode]:
    """OpNodes of a NetDef (devices resolved against the net's device_option)."""
    net_dev = net.device_option if net.HasField("device_option") else None
    nodes = []
    for i, op in enumerate(net.op):
        dev = DeviceKey.of(op.device_option if op.HasField("device_option") else net_dev)
        label = f"#{i} {op.type}" + (f" '{op.name}'" if op.name else "")
        nodes.append(OpNode(tuple(op.input), tuple(op.output), tuple(op.control_input), dev, label))
    return nodes


def dependencies(nodes: Sequence[OpNode]) -> list[list[int]]:
    """Parents of each op from blob hazards, before pruning (ascending, no self-edges)."""
    last_writer: dict[str, int] = {}
    readers: dict[str, list[int]] = {}
    parents: list[list[int]] = []
    for i, node in enumerate(nodes):
        ps: set[int] = set()
        for b in (*node.inputs, *node.control_inputs):
            w = last_writer.get(b)
            if w is not None:
                ps.add(w)
        for b in node.outputs:
            w = last_writer.get(b)
            if w is not None:
                ps.add(w)
            ps.update(readers.get(b, ()))
        for b in (*node.inputs, *node.control_inputs):
            readers.setdefault(b, []).append(i)
        for b in node.outputs:
            last_writer[b] = i
            readers[b] = []
        ps.discard(i)
        parents.append(sorted(ps))
    return parents


def prune(parents: Sequence[Sequence[int]]) -> list[list[int]]:
    """Drop edges implied by a longer path (transitive reduction of a DAG in index order)."""
    ancestors: list[int] = []  # bitsets
    pruned: list[list[int]] = []
    for ps in parents:
        union = 0
        for p in ps:
            union |= ancestors[p]
        keep = [p for p in ps if not (union >> p) & 1]
        pruned.append(keep)
        mine = union
        for p in keep:
            mine |= 1 << p
        ancestors.append(mine)
    return pruned


def build_graph(nodes: Sequence[OpNode], *, chain_breaks: Collection[int] = ()) -> Graph:
    """Analyse ``nodes`` (in NetDef order).

    Args:
        nodes: the operators.
        chain_breaks: ops that must end their chain (e.g. async ops: their children
            start when the op completes, not when it returns).
    """
    n = len(nodes)
    parents = prune(dependencies(nodes))
    children: list[list[int]] = [[] for _ in range(n)]
    for i, ps in enumerate(parents):
        for p in ps:
            children[p].append(i)
    breaks = set(chain_breaks)
    chain_of = [-1] * n
    chains: list[tuple[int, ...]] = []
    for i in range(n):
        if chain_of[i] >= 0:
            continue
        members = [i]
        cur = i
        while (
            cur not in breaks
            and len(children[cur]) == 1
            and len(parents[children[cur][0]]) == 1
            and nodes[children[cur][0]].device == nodes[cur].device
        ):
            cur = children[cur][0]
            members.append(cur)
        for m in members:
            chain_of[m] = len(chains)
        chains.append(tuple(members))
    chain_parents = [sorted({chain_of[p] for p in parents[c[0]]}) for c in chains]
    chain_children: list[list[int]] = [[] for _ in chains]
    for c, ps in enumerate(chain_parents):
        for p in ps:
            chain_children[p].append(c)
    return Graph(
        parents=tuple(tuple(p) for p in parents),
        children=tuple(tuple(c) for c in children),
        chains=tuple(chains),
        chain_of=tuple(chain_of),
        chain_parents=tuple(tuple(p) for p in chain_parents),
        chain_children=tuple(tuple(c) for c in chain_children),
    )


def analyze(net: pb.NetDef) -> Graph:
    """The dependency graph of a NetDef."""
    return build_graph(nodes_of(net))


def _ops(ids: Sequence[int]) -> str:
    return ", ".join(f"#{i}" for i in ids) if ids else "-"


def describe_graph(net: pb.NetDef) -> list[str]:
    """Readable dump of the dependency graph: edges per op, then the chains."""
    nodes = nodes_of(net)
    g = build_graph(nodes)
    devices = sorted({str(nd.device) for nd in nodes})
    lines = [
        f"dependency graph: {len(nodes)} ops, {g.num_edges} edges (after pruning), "
        f"{len(g.chains)} chains, {len(g.roots())} root chains, devices: {', '.join(devices) or '-'}"
    ]
    width = max((len(nd.label) for nd in nodes), default=0)
    for i, nd in enumerate(nodes):
        lines.append(
            f"  {nd.label:{width}s}  chain {g.chain_of[i]:<4d} after: {_ops(g.parents[i])}; before: {_ops(g.children[i])}"
        )
    lines.append("chains:")
    for c, members in enumerate(g.chains):
        dev = nodes[members[0]].device
        after = ", ".join(f"c{p}" for p in g.chain_parents[c]) or "-"
        labels = [nodes[m].label for m in members]
        if len(labels) > 10:  # long chains would make unreadable lines; the per-op list above has them all
            labels = [*labels[:4], f"... {len(labels) - 6} more ...", *labels[-2:]]
        lines.append(f"  c{c} on {dev}, {len(members)} op(s): {' -> '.join(labels)}  (after {after})")
    return lines
