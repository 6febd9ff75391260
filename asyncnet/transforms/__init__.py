"""Net transforms for inference: graph rewrites and the optional onnxruntime offload.

* :func:`optimize_for_inference`: drop identity ops, fold SpatialBN / AffineChannel / constant
  Mul+Add into Conv or FC weights, fuse Relu into its producer (ConvRelu, FCRelu, SumRelu).
* :func:`offload_to_onnxruntime`: replace maximal runs of ONNX-exportable ops with ``Onnxifi`` ops
  that run them in onnxruntime (needs the ``onnx`` extra).
"""

from __future__ import annotations

from asyncnet.transforms._graph import RewriteRecord
from asyncnet.transforms.inference import REWRITES, OptimizeResult, optimize_for_inference
from asyncnet.transforms.offload import OffloadResult, offload_to_onnxruntime

__all__ = [
    "REWRITES",
    "OffloadResult",
    "OptimizeResult",
    "RewriteRecord",
    "offload_to_onnxruntime",
    "optimize_for_inference",
]
