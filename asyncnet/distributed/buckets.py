"""Gradient buckets: a few all-reduces per training step instead of one per parameter.

Each collective costs a fixed latency (an op dispatch, a Gloo round trip), which dominates for
the many small gradients of a typical net. As PyTorch's DistributedDataParallel does, gradients
are grouped into buckets in the order the backward pass produces them (last layers first); each
bucket is all-reduced by one ``AllreduceCoalesced`` op placed right after its last gradient is
written, so an early (last layers') bucket travels while the backward pass of earlier layers still runs.

Caps: the first bucket closes once it holds ``first_bucket_bytes``, the others at ``bucket_bytes``.
DDP uses 1 MB / 25 MB; here both default to 25 MB (see below). Pass a small ``first_bucket_bytes``
(e.g. DDP's 1 MB) to split off the last layers' gradients so they overlap the backward pass.
Gradients written by one op (a layer's weight and bias) always share a bucket. A gradient of
unknown size closes its bucket (so nothing unknown is ever merged blindly).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from asyncnet.errors import AsyncNetError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.shapes import infer_shapes

# DDP's 25 MB cap; the first bucket is not made smaller by default. On CPU, Gloo's all-reduce and
# its completion callbacks (which need the GIL) compete with the backward pass for the same cores,
# unlike NCCL on a GPU, so the overlap a small first bucket buys cost more than it hid in most
# runs of bench/bench_distributed.py on the shared 2-core machine (compute-bound LeNet, 2.4 MB of
# gradients: a 1 MB first bucket was 0.94-2.0x slower than one bucket in 6 of 7 runs, 6% faster in
# the quietest). One collective costs ~0.5-1 ms here, so small nets gain most from one bucket.
DEFAULT_BUCKET_BYTES = 25 << 20
DEFAULT_FIRST_BUCKET_BYTES = DEFAULT_BUCKET_BYTES


def gradient_bytes(init_net: pb.NetDef, grads: Mapping[str, str]) -> dict[str, int]:
    """Bytes of each gradient (``grads``: parameter -> gradient), from the parameters' shapes in ``init_net``.

    Gradients whose parameter's shape or dtype the init net does not tell are left out.
    """
    try:
        blobs = infer_shapes(init_net, {}).blobs
    except AsyncNetError:  # sizes are a hint for bucketing; unknown sizes are handled
        return {}
    sizes = {}
    for param, grad in grads.items():
        info = blobs.get(param)
        if info is None or not info.known or info.shape is None:
            continue
        itemsize = np.dtype(info.dtype).itemsize if info.dtype is not None else 4
        sizes[grad] = math.prod(d or 0 for d in info.shape) * itemsize
    return sizes


def plan_buckets(
    groups: Sequence[Sequence[str]],
    sizes: Mapping[str, int],
    *,
    bucket_bytes: int = DEFAULT_BUCKET_BYTES,
    first_bucket_bytes: int = DEFAULT_FIRST_BUCKET_BYTES,
) -> list[list[str]]:
    """Split ``groups`` (gradients written by one op, in production order) into buckets.

    ``bucket_bytes <= 0`` gives one bucket per gradient (Caffe2's one Allreduce per gradient).
    """
    if bucket_bytes <= 0:
        return [[g] for group in groups for g in group]
    buckets: list[list[str]] = []
    current: list[str] = []
    held = 0
    for group in groups:
        current.extend(group)
        unknown = any(g not in sizes for g in group)
        held += sum(sizes.get(g, 0) for g in group)
        cap = first_bucket_bytes if not buckets else bucket_bytes
        if unknown or held >= cap:
            buckets.append(current)
            current, held = [], 0
    if current:
        buckets.append(current)
    return buckets
