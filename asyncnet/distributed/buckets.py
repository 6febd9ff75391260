"""Gradient buckets: a few all-reduces per training step instead of one per parameter.

Each collective costs a fixed latency (an op dispatch, a Gloo round trip), which dominates for
the many small gradients of a typical net. As PyTorch's DistributedDataParallel does, gradients
are grouped into buckets in the order the backward pass produces them (last layers first); each
bucket is all-reduced by one ``AllreduceCoalesced`` op placed right after its last gradient is
written, so an early (last layers') bucket travels while the backward pass of earlier layers still runs.

Caps: the first bucket closes once it holds ``first_bucket_bytes``, the others at ``bucket_bytes``.
Defaults are DDP's, 1 MB / 25 MB: nets with less than 1 MB of gradients get one bucket; pass a
smaller ``first_bucket_bytes`` to split off their last layers so those overlap the backward pass.
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

# DDP's defaults (it uses them for Gloo on CPU too). On the shared 2-core machine the bench could
# not tell a 1 MB first bucket from one bucket: the differences stayed inside the run-to-run noise
# (identical layouts differed up to 2x at load 3-6; the quietest run favoured the 1 MB first bucket
# by 6%). There, Gloo's all-reduce competes with the backward pass for the same two cores; with
# spare cores the overlap hides communication, which is the point of a small first bucket.
DEFAULT_BUCKET_BYTES = 25 << 20
DEFAULT_FIRST_BUCKET_BYTES = 1 << 20


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
