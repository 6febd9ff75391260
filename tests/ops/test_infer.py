"""Shape/dtype inference of the math, reduction, shape and loss ops with unknown ranks and dims.

(Agreement of inference with the kernels on known shapes is checked on every run_op call and every golden.)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from asyncnet.errors import ShapeInferenceError
from asyncnet.net import op_info
from asyncnet.schema import TensorInfo
from tests.ops.run_util import make_op

F32 = np.dtype(np.float32)
UNKNOWN = TensorInfo(None, F32)

# (type, inputs, outputs, args)
OPS: list[tuple[str, int, int, dict[str, Any]]] = [
    *[(t, 1, 1, {}) for t in ("Exp", "Log", "Sqrt", "Erf", "Sin", "Abs", "Sign", "Cube", "Relu", "Selu", "Swish")],
    ("Clip", 1, 1, {"min": 0.0}),
    ("Pow", 1, 1, {"exponent": 2.0}),
    ("Pow", 2, 1, {}),
    ("Glu", 1, 1, {}),
    ("EQ", 2, 1, {}),
    ("And", 2, 1, {"broadcast": 1}),
    ("Not", 1, 1, {}),
    ("Where", 3, 1, {}),
    ("Max", 3, 1, {}),
    ("Mean", 2, 1, {}),
    ("SquareRootDivide", 2, 1, {}),
    ("ReduceSum", 1, 1, {"axes": [0]}),
    ("ReduceL2", 1, 1, {}),
    ("ReduceFrontMean", 1, 1, {}),
    ("ReduceBackMax", 2, 1, {"num_reduce_dim": 1}),
    ("SumElements", 1, 1, {}),
    ("SumSqrElements", 1, 1, {}),
    ("SumElementsInt", 1, 1, {}),
    ("AveragedLoss", 1, 1, {}),
    ("RowwiseMax", 1, 1, {}),
    ("ArgMax", 1, 1, {}),
    ("Moments", 1, 2, {}),
    ("TopK", 1, 3, {"k": 2}),
    ("MatMul", 2, 1, {}),
    ("BatchMatMul", 2, 1, {}),
    ("FCTransposed", 3, 1, {}),
    ("DotProduct", 2, 1, {}),
    ("ElementwiseLinear", 3, 1, {}),
    ("Transpose", 1, 1, {}),
    ("Squeeze", 1, 1, {"dims": [0]}),
    ("ExpandDims", 1, 1, {"dims": [0]}),
    ("Split", 1, 2, {}),
    ("Slice", 1, 1, {"starts": [0], "ends": [-1]}),
    ("Slice", 3, 1, {}),
    ("Tile", 1, 1, {"tiles": 2}),
    ("NumpyTile", 2, 1, {}),
    ("Expand", 2, 1, {}),
    ("Cast", 1, 1, {"to": 2}),
    ("Shape", 1, 1, {}),
    ("Size", 1, 1, {}),
    ("FlattenToVec", 1, 1, {}),
    ("Alias", 1, 1, {}),
    ("Gather", 2, 1, {}),
    ("BatchGather", 2, 1, {}),
    ("BooleanMask", 2, 2, {}),
    ("OneHot", 2, 1, {}),
    ("LengthsToRanges", 1, 1, {}),
    ("LabelCrossEntropy", 2, 1, {}),
    ("CrossEntropy", 2, 1, {}),
    ("SoftmaxWithLoss", 3, 2, {}),
    ("SpatialSoftmaxWithLoss", 2, 2, {}),
    ("SigmoidCrossEntropyWithLogits", 2, 1, {}),
    ("Accuracy", 2, 1, {}),
    ("SquaredL2Distance", 2, 1, {}),
    ("LengthsTile", 2, 1, {}),
    ("LengthsGather", 3, 1, {}),
    ("LengthsRangeFill", 1, 1, {}),
    ("LengthsPad", 2, 1, {"target_length": 2}),
    ("SplitByLengths", 2, 2, {}),
    ("IsMemberOf", 1, 1, {"value": [1, 2]}),
    ("Conditional", 3, 1, {}),
    ("NanCheck", 2, 1, {}),
    ("ClipTensorByScaling", 2, 1, {"threshold": 1.0}),
    ("Find", 2, 1, {}),
    ("Unique", 1, 2, {}),
    ("CosineEmbeddingCriterion", 2, 1, {}),
    ("MarginRankingCriterion", 3, 1, {}),
    ("ChannelStats", 1, 2, {}),
    ("BatchMoments", 1, 2, {"order": "NHWC"}),
    ("BatchOneHot", 3, 1, {}),
    ("BatchBucketOneHot", 3, 1, {}),
    ("BatchBucketize", 4, 1, {}),
    ("BatchSparseToDense", 3, 1, {"dense_last_dim": 4}),
    ("BooleanUnmask", 4, 1, {}),
    ("GatherRanges", 2, 2, {}),
    ("BernoulliJSD", 2, 1, {}),
    ("LengthsSplit", 2, 1, {}),
    ("ReversePackedSegs", 2, 1, {}),
    ("RemoveDataBlocks", 2, 1, {}),
    ("SegmentOneHot", 3, 1, {}),
    ("SinusoidPositionEncoding", 1, 1, {}),
    ("ScatterAssign", 3, 1, {}),
    ("ScatterWeightedSum", 5, 1, {}),
    ("PackSegments", 2, 2, {"return_presence_mask": 1}),
    ("UnpackSegments", 2, 1, {}),
    ("NegateGradient", 1, 1, {}),
    ("LengthsTopK", 2, 2, {"k": 2}),
    ("FlexibleTopK", 2, 2, {}),
    ("FindDuplicateElements", 1, 1, {}),
]


def _infer(op_type: str, ins: list[TensorInfo], n_out: int, **args: Any) -> list[TensorInfo]:
    outs = [f"o{k}" for k in range(n_out)]
    if op_type.startswith("Scatter"):
        outs[0] = "i0"  # these ops must run in place
    op = make_op(op_type, [f"i{k}" for k in range(len(ins))], outs, **args)
    info = op_info(op)
    assert info.schema.infer is not None
    return info.schema.infer(info, ins)


@pytest.mark.parametrize(("op_type", "n_in", "n_out", "args"), OPS, ids=[f"{o[0]}-{o[1]}" for o in OPS])
def test_unknown_rank_is_handled(op_type: str, n_in: int, n_out: int, args: dict[str, Any]) -> None:
    out = _infer(op_type, [UNKNOWN] * n_in, n_out, **args)
    assert len(out) >= n_out
    assert all(isinstance(t, TensorInfo) for t in out)


@pytest.mark.parametrize(("op_type", "n_in", "n_out", "args"), OPS, ids=[f"{o[0]}-{o[1]}" for o in OPS])
def test_unknown_dims_are_handled(op_type: str, n_in: int, n_out: int, args: dict[str, Any]) -> None:
    ins = [TensorInfo((None, None, None), F32)] * n_in
    out = _infer(op_type, ins, n_out, **args)
    assert len(out) >= n_out


def test_specific_partial_shapes() -> None:
    (y,) = _infer("ReduceSum", [TensorInfo((None, 3, 4), F32)], 1, axes=[1], keepdims=0)
    assert y.shape == (None, 4)
    (y,) = _infer("Transpose", [TensorInfo((None, 3), F32)], 1)
    assert y.shape == (3, None)
    a, b = _infer("Split", [TensorInfo((2, 6, None), F32)], 2, axis=1, split=[2, 4])
    assert a.shape == (2, 2, None) and b.shape == (2, 4, None)
    (y,) = _infer("MatMul", [TensorInfo((None, 3), F32), TensorInfo((3, 5), F32)], 1)
    assert y.shape == (None, 5)
    (y,) = _infer("BatchMatMul", [TensorInfo((7, None, 3), F32), TensorInfo((7, 3, 2), F32)], 1)
    assert y.shape == (7, None, 2)
    (y,) = _infer("Cast", [TensorInfo((None,), F32)], 1, to="INT64")
    assert y.dtype == np.int64
    (y,) = _infer("EQ", [TensorInfo((None, 3), F32), TensorInfo((3,), F32)], 1)
    assert y.shape == (None, 3) and y.dtype == np.bool_
    v, i, f = _infer("TopK", [TensorInfo((4, None), F32)], 3, k=2)
    assert v.shape == (4, 2) and i.dtype == np.int64 and f.shape == (8,)
    (y,) = _infer("Gather", [TensorInfo((5, None), F32), TensorInfo((2, 3), np.dtype(np.int64))], 1)
    assert y.shape == (2, 3, None)


def test_inference_reports_mismatches() -> None:
    with pytest.raises(ShapeInferenceError, match="K="):
        _infer("MatMul", [TensorInfo((2, 3), F32), TensorInfo((4, 5), F32)], 1)
    with pytest.raises(ShapeInferenceError, match="equal batch dims"):
        _infer("BatchMatMul", [TensorInfo((2, 2, 3), F32), TensorInfo((3, 3, 4), F32)], 1)
    with pytest.raises(ShapeInferenceError, match="sum to"):
        _infer("Split", [TensorInfo((2, 6), F32)], 2, axis=1, split=[1, 2])
    with pytest.raises(ShapeInferenceError, match="do not broadcast"):
        _infer("Max", [TensorInfo((2,), F32), TensorInfo((3,), F32)], 1)
    with pytest.raises(ShapeInferenceError, match="cannot squeeze"):
        _infer("Squeeze", [TensorInfo((2, 3), F32)], 1, dims=[0])
