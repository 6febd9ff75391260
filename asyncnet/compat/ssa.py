"""Static single assignment view of a NetDef, for partial cloning (as Caffe2's core did)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from asyncnet.proto import caffe2_pb2 as pb

Versioned = tuple[str, int]


def ssa(
    net: pb.NetDef, versions: dict[str, int]
) -> tuple[list[tuple[list[Versioned], list[Versioned]]], dict[str, int]]:
    """Each op's inputs and outputs as (blob, version); every write makes a new version."""
    for b in net.external_input:
        versions.setdefault(b, 0)
    ssa: list[tuple[list[Versioned], list[Versioned]]] = []
    for op in net.op:
        if not net.external_input:
            for b in op.input:
                versions.setdefault(b, 0)
        ins = [(b, versions.get(b, 0)) for b in op.input]
        for b in op.output:
            versions[b] = versions.get(b, 0) + 1
        ssa.append((ins, [(b, versions[b]) for b in op.output]))
    return ssa, versions


def ops_in_path(
    ssa: list[tuple[list[Versioned], list[Versioned]]],
    versions: Mapping[str, int],
    inputs: Sequence[str],
    outputs: Sequence[str],
) -> list[int]:
    """Indices of the ops needed to compute the latest ``outputs`` from the latest ``inputs``."""
    stop = {(b, versions[b]) for b in inputs}
    producer = {o: i for i, (_, outs) in enumerate(ssa) for o in outs}
    queue = [(b, versions[b]) for b in outputs]
    used: set[int] = set()
    while queue:
        blob = queue.pop()
        if blob in stop or blob not in producer:
            continue
        i = producer[blob]
        if i not in used:
            used.add(i)
            queue.extend(ssa[i][0])
    return sorted(used)
