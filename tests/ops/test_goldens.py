"""Every Caffe2 serialized operator test (golden inputs and outputs recorded by Caffe2 itself).

For each zip in ``caffe2_serialized_operator_tests/``: run ``op.pb`` on the recorded inputs and compare
every output with Caffe2's. A registered op type must reproduce the golden; an unregistered one is
reported as not runnable, which is only allowed for op types listed in OUT_OF_SCOPE (an unregistered
op type from IN_SCOPE fails).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import default_registry
from asyncnet.workspace import Workspace
from tests.conftest import REALNETS, realnets_path
from tests.ops.run_util import check_inference

GOLDEN_DIR = REALNETS / "caffe2_serialized_operator_tests"
ZIPS = sorted(GOLDEN_DIR.glob("*.zip")) if GOLDEN_DIR.exists() else []

# Op types of issue #4 (forward operators) and issue #5 (training ops and gradient ops) that the
# goldens exercise: each must be registered and reproduce Caffe2.
IN_SCOPE = frozenset(
    {
        # math / activations / dense
        "Relu", "ReluN", "LeakyRelu", "Tanh", "Sinh", "Acos", "Atan", "Clip", "Glu", "Pow", "Softmax",
        "FC", "MatMul", "BatchMatMul", "Mean", "Max", "Min", "Sum", "SquareRootDivide",
        # reductions
        "ArgMin", "ReduceMax", "ReduceMean", "ReduceFrontMax", "ReduceFrontSum", "ReduceBackMax",
        "ReduceBackMean", "ColwiseMax", "SumElements", "SumElementsInt",
        # shape / data movement
        "Concat", "Split", "Slice", "Transpose", "Gather", "BatchGather", "NumpyTile", "OneHot",
        "BooleanMask", "LengthsToRanges", "Size",
        # losses
        "AveragedLoss", "SoftmaxWithLoss", "SpatialSoftmaxWithLoss",
        # vision (H4a)
        "Conv", "SpatialBN", "PadImage", "Dropout",
        # detection (H4c)
        "BBoxTransform", "BoxWithNMSLimit",
        # training (issue #5)
        "Adagrad", "MomentumSGD", "LearningRate", "WeightedSum",
        # gradient ops of in-scope forward ops
        "SoftmaxGradient", "MaxGradient", "MinGradient", "LayerNormGradient", "UpsampleBilinearGradient",
    }
)  # fmt: skip

# Op types outside issues #4/#5: sequence/sparse/string utilities, RNNs, CTC decoders, sparse
# optimizers and other specialised ops. Some are implemented anyway (cheap extras): a registered op
# type always runs and must match, whichever set lists it.
OUT_OF_SCOPE = frozenset(
    {
        "Adadelta", "SparseAdadelta", "SparseAdagrad", "RowWiseSparseAdagrad", "SparseMomentumSGDUpdate",
        "Wngrad", "SparseWngrad", "LearningRateAdaption",
        "BatchBoxCox", "BatchBucketize", "BatchMoments", "BatchSparseToDense", "SequenceMask",
        "BooleanUnmask", "ChannelBackpropStats", "ChannelStats", "ClipTensorByScaling",
        "CollectAndDistributeFpnRpnProposals", "SplitByLengths", "Conditional", "CosineEmbeddingCriterion",
        "CTCBeamSearchDecoder", "CTCGreedyDecoder", "IsMemberOf", "DiagonalFill", "LengthsRangeFill", "Find",
        "FlexibleTopK", "GatherRanges", "GatherRangesToDense", "GRUUnit", "IndexHash", "IntegralImage",
        "IntegralImageGradient", "BernoulliJSD", "LengthsSplit", "LengthsPad", "LengthsTile", "LengthsTopK",
        "LC", "MarginRankingCriterion", "MergeIdLists", "NegateGradient", "BatchBucketOneHot", "BatchOneHot",
        "SegmentOneHot", "ONNXWhile", "PackSegments", "PackRNNSequence", "UnpackRNNSequence",
        "PiecewiseLinearTransform", "PairWiseLoss", "RecurrentNetwork", "AddPadding", "FindDuplicateElements",
        "GatherPadding", "RemoveDataBlocks", "ReversePackedSegs", "SinusoidPositionEncoding", "ScatterAssign",
        "ScatterWeightedSum", "StringEndsWith", "StringStartsWith", "Unique", "LengthsGather", "NanCheck",
    }
)  # fmt: skip


def random_outputs(op: pb.OperatorDef) -> set[int]:
    """Outputs that are random by design: only their shape is compared.

    (No recorded golden needs it today: the Dropout golden runs with is_test=1.)
    """
    args = {a.name: a for a in op.arg}
    if op.type == "Dropout" and not ("is_test" in args and args["is_test"].i):
        return {0, 1}
    return set()


def load_golden(path: Path) -> tuple[pb.OperatorDef, list[Any], list[Any]]:
    """(OperatorDef, inputs, outputs) of one golden zip."""
    with zipfile.ZipFile(path) as z:
        op = pb.OperatorDef()
        op.ParseFromString(z.read("op.pb"))
        # The only place pickle is allowed: Caffe2 stored inputs/outputs as object arrays.
        data = np.load(io.BytesIO(z.read("inout.npz")), encoding="bytes", allow_pickle=True)
        return op, list(data["inputs"]), list(data["outputs"])


def golden_op_types() -> dict[str, str]:
    """zip name -> op type, for every golden."""
    out = {}
    for p in ZIPS:
        with zipfile.ZipFile(p) as z:
            op = pb.OperatorDef()
            op.ParseFromString(z.read("op.pb"))
            out[p.name] = op.type
    return out


def tolerance(dtype: np.dtype[Any]) -> tuple[float, float]:
    """(rtol, atol) per dtype: Caffe2's own checks used 1e-7-scale bounds on float32."""
    if dtype == np.float64:
        return 1e-12, 1e-12
    if dtype == np.float16:
        return 1e-3, 1e-3
    return 1e-7, 1e-7


def assert_matches(name: str, got: Any, want: Any) -> None:
    want = np.asarray(want)
    got = np.asarray(got)
    assert got.shape == want.shape, f"{name}: shape {got.shape} != Caffe2's {want.shape}"
    assert got.dtype == want.dtype, f"{name}: dtype {got.dtype} != Caffe2's {want.dtype}"
    if want.dtype.kind == "f":
        rtol, atol = tolerance(want.dtype)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=name)
    else:
        np.testing.assert_array_equal(got, want, err_msg=name)


def _runnable_zips() -> list[Path]:
    """Goldens to run: every registered op type, and every in-scope one (which then fails if unregistered).

    Out-of-scope unregistered types are not parametrized at all (no skips standing in for work); they are
    listed and classified by the two tests below.
    """
    reg = default_registry()
    types = golden_op_types()
    return [p for p in ZIPS if reg.has(types[p.name]) or types[p.name] in IN_SCOPE]


RUNNABLE = _runnable_zips()


@pytest.mark.parametrize("path", RUNNABLE or [None], ids=[p.name for p in RUNNABLE] or ["absent"])
def test_golden(path: Path | None) -> None:
    if path is None:
        realnets_path("caffe2_serialized_operator_tests")
        pytest.fail("goldens present but none runnable")
    op, inputs, outputs = load_golden(path)
    if not default_registry().has(op.type):
        pytest.fail(f"{op.type} is in scope (issue #4/#5) but not registered")
    ws = Workspace()
    # Caffe2's test harness stored extra non-tensor arguments after the real inputs; only the first
    # len(op.input) are blobs.
    for name, value in zip(op.input, inputs):
        ws.feed(name, value)
    ws.run_operator_once(op)
    random = random_outputs(op)
    for i, (name, want) in enumerate(zip(op.output, outputs)):
        got = ws.fetch(name)
        if i in random:
            assert np.shape(got) == np.shape(want), f"{path.name} output {i}: shape {np.shape(got)}"
            continue
        assert_matches(f"{path.name} output {i} '{name}'", got, want)
    # Shape inference from the recorded inputs must agree with Caffe2's outputs.
    check_inference(op, [np.asarray(v) for v in inputs[: len(op.input)]], outputs[: len(op.output)])


def test_every_golden_op_type_is_classified() -> None:
    realnets_path("caffe2_serialized_operator_tests")
    types = set(golden_op_types().values())
    unclassified = sorted(types - IN_SCOPE - OUT_OF_SCOPE)
    assert not unclassified, f"golden op types in neither IN_SCOPE nor OUT_OF_SCOPE: {unclassified}"
    assert not IN_SCOPE & OUT_OF_SCOPE
    # Stale entries would hide a typo in a type name.
    assert IN_SCOPE <= types, sorted(IN_SCOPE - types)
    assert OUT_OF_SCOPE <= types, sorted(OUT_OF_SCOPE - types)


def test_list_not_runnable_goldens(capsys: pytest.CaptureFixture[str]) -> None:
    """Lists the goldens that cannot run (unregistered op types); none may be in scope."""
    realnets_path("caffe2_serialized_operator_tests")
    reg = default_registry()
    not_runnable = {z: t for z, t in golden_op_types().items() if not reg.has(t)}
    with capsys.disabled():
        print(f"\n{len(not_runnable)} of {len(ZIPS)} goldens not runnable (op type not registered):")
        for z, t in sorted(not_runnable.items()):
            print(f"  {t:40s} {z}")
    missing = sorted({t for t in not_runnable.values() if t in IN_SCOPE})
    assert not missing, f"in-scope op types not registered: {missing}"


def test_random_outputs_only_for_training_dropout() -> None:
    from asyncnet.serde import make_argument

    train = pb.OperatorDef(type="Dropout", input=["x"], output=["y", "mask"])
    assert random_outputs(train) == {0, 1}
    test_mode = pb.OperatorDef(type="Dropout", input=["x"], output=["y"])
    test_mode.arg.append(make_argument("is_test", 1))
    assert random_outputs(test_mode) == set()
    assert random_outputs(pb.OperatorDef(type="Relu")) == set()
