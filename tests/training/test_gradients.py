"""add_gradient_ops: Caffe2's backward-pass construction, and gradient defs against Caffe2's goldens."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from asyncnet.errors import AsyncNetError, GradientError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import argument_value, make_argument
from asyncnet.training.gradients import (
    GradientContext,
    GradientSpec,
    add_gradient_ops,
    gradient_for_op,
    has_gradient,
    register_gradient,
)
from asyncnet.workspace import Workspace
from tests.conftest import REALNETS


def mk(op_type: str, inputs: list[str], outputs: list[str], **args: Any) -> pb.OperatorDef:
    op = pb.OperatorDef(type=op_type, input=inputs, output=outputs)
    for k, v in args.items():
        op.arg.append(make_argument(k, v))
    return op


def net_of(*ops: pb.OperatorDef) -> pb.NetDef:
    net = pb.NetDef(name="fwd")
    net.op.extend(ops)
    return net


def sig(op: pb.OperatorDef) -> tuple[str, list[str], list[str]]:
    return (op.type, list(op.input), list(op.output))


# ---------------------------------------------------------------------------
# Structure of the backward pass


def test_chain_seeds_loss_and_walks_backwards() -> None:
    net = net_of(
        mk("FC", ["x", "w", "b"], ["y"]),
        mk("Relu", ["y"], ["r"]),
        mk("AveragedLoss", ["r"], ["loss"]),
    )
    grads = add_gradient_ops(net, ["loss"])
    added = [sig(op) for op in net.op[3:]]
    assert added == [
        ("ConstantFill", ["loss"], ["loss_autogen_grad"]),
        ("AveragedLossGradient", ["r", "loss_autogen_grad"], ["r_grad"]),
        ("ReluGradient", ["r", "r_grad"], ["y_grad"]),
        ("FCGradient", ["x", "w", "y_grad"], ["w_grad", "b_grad", "x_grad"]),
    ]
    seed = net.op[3]
    assert [(a.name, argument_value(a)) for a in seed.arg] == [("value", 1.0)]
    assert all(op.is_gradient_op for op in net.op[3:])
    assert not any(op.is_gradient_op for op in net.op[:3])
    assert grads == {
        "loss": "loss_autogen_grad",
        "r": "r_grad",
        "y": "y_grad",
        "x": "x_grad",
        "w": "w_grad",
        "b": "b_grad",
    }


def test_blob_read_twice_gets_autosplit_partials_and_sum() -> None:
    # x feeds two branches; Caffe2 keeps the first partial's name, renames the
    # later ones _<grad>_autosplit_<k> and adds a Sum.
    net = net_of(
        mk("Relu", ["x"], ["a"]),
        mk("Sigmoid", ["x"], ["b"]),
        mk("Add", ["a", "b"], ["c"]),
        mk("AveragedLoss", ["c"], ["loss"]),
    )
    grads = add_gradient_ops(net, ["loss"])
    added = [sig(op) for op in net.op[4:]]
    assert added[-3:] == [
        ("SigmoidGradient", ["b", "b_grad"], ["x_grad"]),
        ("ReluGradient", ["a", "a_grad"], ["_x_grad_autosplit_0"]),
        ("Sum", ["x_grad", "_x_grad_autosplit_0"], ["x_grad"]),
    ]
    assert grads["x"] == "x_grad"


def test_pass_through_gradients_are_summed_with_computed_ones() -> None:
    # Sum's gradient is its output gradient itself (no op); x also reaches the loss via Relu.
    net = net_of(
        mk("Relu", ["x"], ["r"]),
        mk("Sum", ["x", "r"], ["s"]),
        mk("AveragedLoss", ["s"], ["loss"]),
    )
    grads = add_gradient_ops(net, ["loss"])
    added = [sig(op) for op in net.op[3:]]
    # Relu's partial keeps the name x_grad (it is the first made by an op); Sum runs in place on it.
    assert added[-2:] == [
        ("ReluGradient", ["r", "s_grad"], ["x_grad"]),
        ("Sum", ["x_grad", "s_grad"], ["x_grad"]),
    ]
    assert grads["x"] == "x_grad"


def test_in_place_ops_keep_versions_apart() -> None:
    net = net_of(
        mk("FC", ["x", "w", "b"], ["y"]),
        mk("Relu", ["y"], ["y"]),
        mk("AveragedLoss", ["y"], ["loss"]),
    )
    grads = add_gradient_ops(net, ["loss"])
    added = [sig(op) for op in net.op[3:]]
    assert added[1:] == [
        ("AveragedLossGradient", ["y", "loss_autogen_grad"], ["y_grad"]),
        ("ReluGradient", ["y", "y_grad"], ["y_grad"]),
        ("FCGradient", ["x", "w", "y_grad"], ["w_grad", "b_grad", "x_grad"]),
    ]
    assert grads["w"] == "w_grad"


def test_non_differentiable_inputs_and_ops_off_the_path() -> None:
    net = net_of(
        mk("FC", ["x", "w", "b"], ["logits"]),
        mk("SoftmaxWithLoss", ["logits", "label"], ["p", "loss"]),
        mk("Accuracy", ["p", "label"], ["acc"]),
    )
    grads = add_gradient_ops(net, ["loss"])
    assert "label" not in grads and "acc" not in grads
    types = [op.type for op in net.op[3:]]
    assert types == ["ConstantFill", "SoftmaxWithLossGradient", "FCGradient"]
    assert list(net.op[4].input) == ["logits", "label", "p", "loss_autogen_grad"]


def test_one_hot_ops_pass_no_gradient() -> None:
    # Caffe2's NO_GRADIENT(OneHot) etc.: a loss that multiplies in a label's one-hot (as its CRF does)
    # still differentiates the other factor; the one-hot's inputs get nothing.
    net = net_of(
        mk("OneHot", ["label", "size"], ["oh"]),
        mk("Mul", ["oh", "x"], ["prod"]),
        mk("SumElements", ["prod"], ["loss"]),
    )
    grads = add_gradient_ops(net, ["loss"])
    assert "x" in grads and "label" not in grads and "size" not in grads
    assert not any(op.type.startswith("OneHot") for op in net.op[3:])


def test_missing_gradient_maker_names_the_op() -> None:
    odd = mk("NoSuchOpForGrad", ["y"], ["z"])
    odd.name = "weird"
    net = net_of(mk("FC", ["x", "w", "b"], ["y"]), odd)
    with pytest.raises(GradientError, match=r"op #1 NoSuchOpForGrad 'weird'.*no gradient"):
        add_gradient_ops(net, ["z"])
    assert isinstance(GradientError("x"), AsyncNetError)


def test_unknown_loss_and_empty_losses_raise() -> None:
    net = net_of(mk("Relu", ["x"], ["y"]))
    with pytest.raises(GradientError, match="'nope'"):
        add_gradient_ops(net, ["nope"])
    with pytest.raises(GradientError):
        add_gradient_ops(net, [])


def test_missing_output_gradient_raises() -> None:
    # SoftmaxWithLoss needs the loss gradient; only the softmax output has one here.
    net = net_of(mk("SoftmaxWithLoss", ["x", "l"], ["p", "loss"]), mk("AveragedLoss", ["p"], ["m"]))
    with pytest.raises(GradientError, match="output 1"):
        add_gradient_ops(net, ["m"])


def test_skip_leaves_leading_ops_out() -> None:
    net = net_of(mk("Copy", ["raw"], ["x"]), mk("Relu", ["x"], ["y"]), mk("AveragedLoss", ["y"], ["loss"]))
    grads = add_gradient_ops(net, ["loss"], skip=1)
    assert "raw" not in grads and grads["x"] == "x_grad"
    assert "Copy" not in [op.type for op in net.op[3:]]


def test_copies_device_option_engine_and_arguments() -> None:
    op = mk("LeakyRelu", ["x"], ["y"], alpha=0.3)
    op.engine = "CUDNN"
    op.device_option.device_type = 1
    spec = gradient_for_op(op, ["y_grad"])
    (g,) = spec.ops
    assert g.engine == "CUDNN" and g.device_option.device_type == 1 and g.is_gradient_op
    assert [(a.name, round(argument_value(a), 6)) for a in g.arg] == [("alpha", 0.3)]
    assert spec.grad_inputs == ["x_grad"]


def test_register_gradient_twice_raises_and_custom_maker_is_used() -> None:
    @register_gradient("TestOnlyDoubler")
    def _maker(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
        g = GradientContext(op, g_out)
        return g.spec([g.op_def("Scale", [g.GO(0)], [g.GI(0)], {"scale": 2.0})])

    assert has_gradient("TestOnlyDoubler")
    with pytest.raises(GradientError, match="twice"):
        register_gradient("TestOnlyDoubler")(_maker)
    spec = gradient_for_op(mk("TestOnlyDoubler", ["a"], ["b"]), ["b_grad"])
    assert sig(spec.ops[0]) == ("Scale", ["b_grad"], ["a_grad"])


@pytest.mark.timeout(120)
def test_whole_net_gradient_matches_finite_differences() -> None:
    # A net with a shared blob, in-place op and broadcasting: the emitted backward
    # pass must give d(loss)/d(param) equal to central differences of the forward net.
    rng = np.random.default_rng(3)
    feeds = {
        "x": rng.normal(size=(4, 3)),
        "w": rng.normal(size=(5, 3)),
        "b": rng.normal(size=(5,)),
        "s": rng.normal(size=(5,)),
    }
    fwd = net_of(
        mk("FC", ["x", "w", "b"], ["h"]),
        mk("Tanh", ["h"], ["t"]),
        mk("Mul", ["t", "s"], ["m"]),
        mk("Add", ["m", "t"], ["m"]),
        mk("Sigmoid", ["m"], ["q"]),
        mk("AveragedLoss", ["q"], ["loss"]),
    )

    def loss_of(values: dict[str, np.ndarray]) -> float:
        ws = Workspace()
        for k, v in values.items():
            ws.feed(k, v.copy())
        ws.run_net_once(fwd, executor="simple")
        return float(ws.fetch("loss"))

    train = pb.NetDef()
    train.CopyFrom(fwd)
    grads = add_gradient_ops(train, ["loss"])
    ws = Workspace()
    for k, v in feeds.items():
        ws.feed(k, v.copy())
    ws.run_net_once(train, executor="simple")
    eps = 1e-6
    for name in ("x", "w", "b", "s"):
        analytic = np.asarray(ws.fetch(grads[name]))
        numeric = np.zeros_like(feeds[name])
        for j in range(feeds[name].size):
            for sign in (1, -1):
                shifted = {k: v.copy() for k, v in feeds.items()}
                shifted[name].reshape(-1)[j] += sign * eps
                numeric.reshape(-1)[j] += sign * loss_of(shifted)
        numeric /= 2 * eps
        np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8, err_msg=name)


# ---------------------------------------------------------------------------
# Caffe2 goldens: grad_N.pb of the serialized operator tests

GOLDEN_DIR = REALNETS / "caffe2_serialized_operator_tests"
_ZIPS = sorted(GOLDEN_DIR.glob("*.zip")) if GOLDEN_DIR.exists() else []


def _golden(path: Path) -> tuple[pb.OperatorDef, list[pb.OperatorDef]]:
    with zipfile.ZipFile(path) as zf:
        op = pb.OperatorDef()
        op.ParseFromString(zf.read("op.pb"))
        names = sorted(n for n in zf.namelist() if n.startswith("grad_") and n.endswith(".pb"))
        grads = []
        for n in sorted(names, key=lambda s: int(s[5:-3])):
            g = pb.OperatorDef()
            g.ParseFromString(zf.read(n))
            grads.append(g)
    return op, grads


def _with_grads() -> list[Path]:
    return [p for p in _ZIPS if _golden(p)[1]]


def _args(op: pb.OperatorDef) -> list[tuple[str, Any]]:
    out = []
    for a in op.arg:
        v = argument_value(a)
        out.append(
            (
                a.name,
                [round(x, 5) if isinstance(x, float) else x for x in v]
                if isinstance(v, list)
                else round(v, 5)
                if isinstance(v, float)
                else v,
            )
        )
    return out


GOLDENS = _with_grads()
COVERED = [p for p in GOLDENS if has_gradient(_golden(p)[0].type)]

# Forward ops whose goldens carry gradient defs but whose gradients asyncnet does not make
# (sequence/RNN/ranking/detection ops outside issue #5).
OUT_OF_SCOPE = {
    "BatchMoments", "BatchSparseToDense", "SequenceMask", "SplitByLengths", "CosineEmbeddingCriterion", "Pow",
    "FlexibleTopK", "BatchGather", "GRUUnit", "IntegralImage", "BernoulliJSD", "LengthsTile", "LengthsTopK", "LC",
    "MarginRankingCriterion", "PackSegments", "PackRNNSequence", "UnpackRNNSequence", "PairWiseLoss",
    "RecurrentNetwork", "ReversePackedSegs", "SquareRootDivide", "NanCheck",
    "NegateGradient",
}  # fmt: skip


@pytest.mark.parametrize("path", COVERED, ids=[p.stem for p in COVERED])
def test_gradient_defs_match_caffe2_golden(path: Path) -> None:
    op, golden = _golden(path)
    spec = gradient_for_op(op, [f"{o}_grad" for o in op.output])
    assert [sig(g) for g in spec.ops] == [sig(g) for g in golden]
    for mine, theirs in zip(spec.ops, golden):
        assert _args(mine) == _args(theirs), f"{mine.type}: arguments differ"
        assert mine.is_gradient_op and theirs.is_gradient_op


def test_golden_gradient_coverage_is_what_we_expect() -> None:
    if not GOLDENS:
        pytest.skip("real-net corpus not available")
    covered = {_golden(p)[0].type for p in COVERED}
    uncovered = {_golden(p)[0].type for p in GOLDENS} - covered
    assert uncovered <= OUT_OF_SCOPE, f"goldens with gradients and no maker: {sorted(uncovered - OUT_OF_SCOPE)}"
    # The forward ops of issue #5 whose goldens carry gradient defs.
    must = {
        "Relu", "LeakyRelu", "Clip", "Concat", "Split", "Conv", "Dropout", "FC", "Tanh", "AveragedLoss",
        "Softmax", "SoftmaxWithLoss", "SpatialBN", "Transpose", "WeightedSum",
    }  # fmt: skip
    assert must <= covered, f"missing makers for {sorted(must - covered)}"


# ---------------------------------------------------------------------------
# Every maker emits Caffe2's gradient op types, and asyncnet can run them

EMITS: list[tuple[str, int, int, dict[str, Any], list[str]]] = [
    # (forward type, n inputs, n outputs, forward args, gradient op types)
    ("Relu", 1, 1, {}, ["ReluGradient"]),
    ("ReluN", 1, 1, {"n": 6.0}, ["ReluNGradient"]),
    ("Sigmoid", 1, 1, {}, ["SigmoidGradient"]),
    ("Tanh", 1, 1, {}, ["TanhGradient"]),
    ("Softmax", 1, 1, {}, ["SoftmaxGradient"]),
    ("LeakyRelu", 1, 1, {}, ["LeakyReluGradient"]),
    ("Elu", 1, 1, {}, ["EluGradient"]),
    ("Clip", 1, 1, {"min": 0.0}, ["ClipGradient"]),
    ("FC", 3, 1, {}, ["FCGradient"]),
    ("BatchMatMul", 2, 1, {}, ["BatchMatMul", "BatchMatMul"]),
    ("MatMul", 2, 1, {}, ["MatMul", "MatMul"]),
    ("Add", 2, 1, {}, ["AddGradient"]),
    ("Sub", 2, 1, {}, ["SubGradient"]),
    ("Mul", 2, 1, {}, ["MulGradient"]),
    ("Div", 2, 1, {}, ["DivGradient"]),
    ("Sum", 3, 1, {}, []),
    ("Conv", 3, 1, {"kernel": 3}, ["ConvGradient"]),
    ("Conv1D", 3, 1, {"kernel": 3}, ["Conv1DGradient"]),
    ("Conv2D", 2, 1, {"kernel": 3}, ["Conv2DGradient"]),
    ("Conv3D", 3, 1, {"kernel": 3}, ["Conv3DGradient"]),
    ("ConvTranspose", 3, 1, {"kernel": 2}, ["ConvTransposeGradient"]),
    ("MaxPool", 1, 1, {"kernel": 2}, ["MaxPoolGradient"]),
    ("MaxPool1D", 1, 1, {"kernel": 2}, ["MaxPool1DGradient"]),
    ("MaxPool2D", 1, 1, {"kernel": 2}, ["MaxPool2DGradient"]),
    ("MaxPool3D", 1, 1, {"kernel": 2}, ["MaxPool3DGradient"]),
    ("AveragePool", 1, 1, {"kernel": 2}, ["AveragePoolGradient"]),
    ("AveragePool1D", 1, 1, {"kernel": 2}, ["AveragePool1DGradient"]),
    ("AveragePool2D", 1, 1, {"kernel": 2}, ["AveragePool2DGradient"]),
    ("AveragePool3D", 1, 1, {"kernel": 2}, ["AveragePool3DGradient"]),
    ("PadImage", 1, 1, {"pad": 1}, ["PadImageGradient"]),
    ("SpatialBN", 5, 5, {}, ["SpatialBNGradient"]),
    ("Dropout", 1, 2, {}, ["DropoutGrad"]),
    ("SoftmaxWithLoss", 2, 2, {}, ["SoftmaxWithLossGradient"]),
    ("SpatialSoftmaxWithLoss", 3, 2, {}, ["SpatialSoftmaxWithLossGradient"]),
    ("LabelCrossEntropy", 2, 1, {}, ["LabelCrossEntropyGradient"]),
    ("CrossEntropy", 2, 1, {}, ["CrossEntropyGradient"]),
    ("AveragedLoss", 1, 1, {}, ["AveragedLossGradient"]),
    ("SquaredL2Distance", 2, 1, {}, ["SquaredL2DistanceGradient"]),
    ("WeightedSum", 4, 1, {}, ["WeightedSumGradient"]),
    ("Copy", 1, 1, {}, ["Copy"]),
    ("Reshape", 1, 2, {"shape": [-1]}, ["Reshape"]),
    ("Flatten", 1, 1, {}, ["ResizeLike"]),
    ("FlattenToVec", 1, 1, {}, ["ResizeLike"]),
    ("Concat", 2, 2, {}, ["Split"]),
    ("Split", 1, 2, {}, ["Concat"]),
    ("Transpose", 1, 1, {}, ["Transpose"]),
    ("Squeeze", 1, 1, {"dims": [0]}, ["ExpandDims"]),
    ("ExpandDims", 1, 1, {"dims": [0]}, ["Squeeze"]),
    ("Scale", 1, 1, {"scale": 2.0}, ["Scale"]),
    ("Negative", 1, 1, {}, ["Negative"]),
    ("Exp", 1, 1, {}, ["Mul"]),
    ("Log", 1, 1, {}, ["Div"]),
    ("Sqr", 1, 1, {}, ["Scale", "Mul"]),
    ("Sqrt", 1, 1, {}, ["Scale", "Div"]),
    ("Sin", 1, 1, {}, ["SinGradient"]),
    ("Cos", 1, 1, {}, ["CosGradient"]),
    ("Tan", 1, 1, {}, ["TanGradient"]),
    ("Asin", 1, 1, {}, ["AsinGradient"]),
    ("Acos", 1, 1, {}, ["AcosGradient"]),
    ("Atan", 1, 1, {}, ["AtanGradient"]),
    ("Sinh", 1, 1, {}, ["SinhGradient"]),
    ("Cosh", 1, 1, {}, ["CoshGradient"]),
    ("Abs", 1, 1, {}, ["AbsGradient"]),
    ("Mean", 2, 1, {}, ["MeanGradient"]),
    ("Max", 2, 1, {}, ["MaxGradient"]),
    ("Min", 2, 1, {}, ["MinGradient"]),
    ("ReduceSum", 1, 1, {}, ["ReduceSumGradient"]),
    ("ReduceMean", 1, 1, {}, ["ReduceMeanGradient"]),
    ("ReduceMax", 1, 1, {}, ["ReduceMaxGradient"]),
    ("ReduceMin", 1, 1, {}, ["ReduceMinGradient"]),
    ("ReduceFrontSum", 1, 1, {}, ["ReduceFrontSumGradient"]),
    ("ReduceFrontMean", 1, 1, {}, ["ReduceFrontMeanGradient"]),
    ("ReduceFrontMax", 1, 1, {}, ["ReduceFrontMaxGradient"]),
    ("ReduceFrontMin", 1, 1, {}, ["ReduceFrontMinGradient"]),
    ("ReduceBackSum", 1, 1, {}, ["ReduceBackSumGradient"]),
    ("ReduceBackMean", 1, 1, {}, ["ReduceBackMeanGradient"]),
    ("ReduceBackMax", 1, 1, {}, ["ReduceBackMaxGradient"]),
    ("ReduceBackMin", 1, 1, {}, ["ReduceBackMinGradient"]),
    ("SumElements", 1, 1, {}, ["SumElementsGradient"]),
    ("Slice", 1, 1, {"starts": [0], "ends": [-1]}, ["SliceGradient"]),
    ("StopGradient", 1, 1, {}, []),
    ("UpsampleBilinear", 1, 1, {"height_scale": 2.0}, ["UpsampleBilinearGradient"]),
    ("ResizeNearest", 1, 1, {"height_scale": 2.0}, ["ResizeNearestGradient"]),
    ("PRelu", 2, 1, {}, ["PReluGradient"]),
    ("LayerNorm", 1, 3, {}, ["LayerNormGradient"]),
    ("GroupNorm", 3, 3, {}, ["GroupNormGradient"]),
    ("InstanceNorm", 3, 1, {}, ["InstanceNormGradient"]),
    ("AffineChannel", 3, 1, {"is_learnable": 1}, ["AffineChannelGradient"]),
    ("LRN", 1, 2, {"size": 3}, ["LRNGradient"]),
    ("SigmoidCrossEntropyWithLogits", 2, 1, {}, ["SigmoidCrossEntropyWithLogitsGradient"]),
    ("WeightedSigmoidCrossEntropyWithLogits", 3, 1, {}, ["WeightedSigmoidCrossEntropyWithLogitsGradient"]),
    ("DotProduct", 2, 1, {}, ["DotProductGradient"]),
    ("ElementwiseLinear", 3, 1, {}, ["ElementwiseLinearGradient"]),
    ("NCHW2NHWC", 1, 1, {}, ["NHWC2NCHW"]),
    ("NHWC2NCHW", 1, 1, {}, ["NCHW2NHWC"]),
    ("ChannelShuffle", 1, 1, {"group": 2}, ["ChannelShuffleGradient"]),
    ("Tile", 1, 1, {"tiles": 2}, ["TileGradient"]),
    ("Expand", 2, 1, {}, ["ExpandGradient"]),
    ("ReduceL1", 1, 1, {}, ["ReduceL1Gradient"]),
    ("ReduceL2", 1, 1, {}, ["ReduceL2Gradient"]),
    ("ColwiseMax", 1, 1, {}, ["ColwiseMaxGradient"]),
    ("RowwiseMax", 1, 1, {}, ["RowwiseMaxGradient"]),
    ("Swish", 1, 1, {}, ["SwishGradient"]),
    ("Softplus", 1, 1, {}, ["SoftplusGradient"]),
    ("Selu", 1, 1, {}, ["SeluGradient"]),
    ("HardSigmoid", 1, 1, {}, ["HardSigmoidGradient"]),
    ("ThresholdedRelu", 1, 1, {}, ["ThresholdedReluGradient"]),
    ("Softsign", 1, 1, {}, ["SoftsignGradient"]),
    ("Cube", 1, 1, {}, ["CubeGradient"]),
    ("Cbrt", 1, 1, {}, ["CbrtGradient"]),
    ("Reciprocal", 1, 1, {}, ["ReciprocalGradient"]),
    ("Rsqrt", 1, 1, {}, ["RsqrtGradient"]),
    ("Erf", 1, 1, {}, ["ErfGradient"]),
    ("Log1p", 1, 1, {}, ["Log1pGradient"]),
]


@pytest.mark.parametrize("fwd,n_in,n_out,args,types", EMITS, ids=[e[0] for e in EMITS])
def test_maker_emits_runnable_caffe2_gradient_ops(
    fwd: str, n_in: int, n_out: int, args: dict[str, Any], types: list[str]
) -> None:
    from asyncnet.registry import default_registry

    op = mk(fwd, [f"in{i}" for i in range(n_in)], [f"out{i}" for i in range(n_out)], **args)
    spec = gradient_for_op(op, [f"out{i}_grad" for i in range(n_out)])
    assert [g.type for g in spec.ops] == types
    reg = default_registry()
    assert reg.has(fwd), f"forward op {fwd} is not registered"
    for g in spec.ops:
        assert reg.has(g.type), f"{fwd}: gradient op {g.type} is not registered"
        assert g.is_gradient_op
    if fwd != "StopGradient":
        assert any(spec.grad_inputs), f"{fwd}: no input gets a gradient"


def test_stop_gradient_blocks_the_backward_pass() -> None:
    net = net_of(
        mk("FC", ["x", "w", "b"], ["h"]),
        mk("StopGradient", ["h"], ["h"]),
        mk("Relu", ["h"], ["r"]),
        mk("AveragedLoss", ["r"], ["loss"]),
    )
    grads = add_gradient_ops(net, ["loss"])
    # In place, StopGradient also clears the gradient of the version of h it read.
    assert "w" not in grads and "x" not in grads and "h" not in grads
    assert "FCGradient" not in [op.type for op in net.op]
    ws = Workspace()
    ws.feed("x", np.ones((2, 2), np.float32))
    ws.run_operator_once(mk("StopGradient", ["x"], ["y"]))
    np.testing.assert_array_equal(ws.fetch("y"), np.ones((2, 2)))


def test_overwritten_forward_blob_needed_by_a_gradient_raises() -> None:
    # ReluGradient needs Relu's output y, but the in-place Sigmoid overwrites it afterwards.
    net = net_of(mk("Relu", ["x"], ["y"]), mk("Sigmoid", ["y"], ["y"]), mk("AveragedLoss", ["y"], ["loss"]))
    with pytest.raises(GradientError, match=r"op #0 Relu.*ReluGradient needs output 'y'.*version 0.*version 1"):
        add_gradient_ops(net, ["loss"])
    # Writing the later op's output to a new blob fixes it.
    ok = net_of(mk("Relu", ["x"], ["y"]), mk("Sigmoid", ["y"], ["z"]), mk("AveragedLoss", ["z"], ["loss"]))
    assert add_gradient_ops(ok, ["loss"])["x"] == "x_grad"


def test_blob_used_twice_by_one_op_sums_both_partials() -> None:
    net = net_of(mk("Mul", ["x", "x"], ["y"]), mk("AveragedLoss", ["y"], ["loss"]))
    grads = add_gradient_ops(net, ["loss"])
    assert [sig(op) for op in net.op[4:]] == [
        ("MulGradient", ["y_grad", "x", "x"], ["x_grad", "_x_grad_autosplit_0"]),
        ("Sum", ["x_grad", "_x_grad_autosplit_0"], ["x_grad"]),
    ]
    ws = Workspace()
    x = np.arange(1.0, 5.0)
    ws.feed("x", x)
    ws.run_net_once(net, executor="simple")
    np.testing.assert_allclose(ws.fetch(grads["x"]), 2 * x / 4)
