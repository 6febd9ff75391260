"""Dependency analysis of a NetDef (placeholder until the executor layer lands)."""

from __future__ import annotations

from asyncnet.proto import caffe2_pb2 as pb


def describe_graph(net: pb.NetDef) -> list[str]:
    """Readable dump of the dependency graph."""
    raise NotImplementedError
