"""Cases of Caffe2's core_gradients_test.py, run through the facade's AddGradientOperators.

Caffe2's test registers toy gradient makers; here real ops with the same gradient
shapes stand in: Negative for "Direct" (gradient reads only the output gradient),
Relu for "UseOutput", Abs for "UseInput", StopGradient for "Nogradient", and Add /
Sum where a toy op took several inputs. Expected ops are Caffe2's, renamed accordingly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from asyncnet.compat import core, workspace
from asyncnet.errors import GradientError

Spec = tuple[str, Any, Any]


def backward(ops: Sequence[Spec], ys: Any) -> tuple[list[tuple[str, list[str], list[str]]], dict[str, str]]:
    """The gradient ops (type, inputs, outputs) AddGradientOperators appends, and its map."""
    net = core.Net("grad_case")
    for op_type, ins, outs in ops:
        getattr(net, op_type)(ins, outs)
    start = len(net.Proto().op)
    grad_map = net.AddGradientOperators(ys)
    grads = [(op.type, list(op.input), list(op.output)) for op in net.Proto().op[start:]]
    assert all(op.is_gradient_op for op in net.Proto().op[start:])
    return grads, {k: str(v) for k, v in grad_map.items()}


def test_direct_implicit_gradient_source() -> None:
    grads, _ = backward([("Negative", "in", "hidden"), ("Negative", "hidden", "out")], ["out"])
    assert grads == [
        ("ConstantFill", ["out"], ["out_autogen_grad"]),
        ("Negative", ["out_autogen_grad"], ["hidden_grad"]),
        ("Negative", ["hidden_grad"], ["in_grad"]),
    ]


def test_given_gradient_is_used_and_not_seeded() -> None:
    grads, grad_map = backward([("Negative", "in", "hidden"), ("Negative", "hidden", "out")], {"out": "out_grad"})
    assert grads == [("Negative", ["out_grad"], ["hidden_grad"]), ("Negative", ["hidden_grad"], ["in_grad"])]
    assert grad_map == {"out": "out_grad", "hidden": "hidden_grad", "in": "in_grad"}


def test_does_not_generate_unnecessary_gradients() -> None:
    grads, _ = backward([("Negative", "in", "hidden"), ("Negative", "hidden", "out")], {"hidden": "hidden_grad"})
    assert grads == [("Negative", ["hidden_grad"], ["in_grad"])]


def test_direct_in_place() -> None:
    grads, _ = backward([("Negative", "in", "in"), ("Negative", "in", "out")], {"out": "out_grad"})
    assert grads == [("Negative", ["out_grad"], ["in_grad"]), ("Negative", ["in_grad"], ["in_grad"])]


def test_use_output_in_place() -> None:
    grads, _ = backward(
        [("Relu", "in", "in"), ("Relu", "in", "out"), ("Negative", "out", "sink")], {"sink": "sink_grad"}
    )
    assert grads == [
        ("Negative", ["sink_grad"], ["out_grad"]),
        ("ReluGradient", ["out", "out_grad"], ["in_grad"]),
        ("ReluGradient", ["in", "in_grad"], ["in_grad"]),
    ]


def test_use_output_but_output_has_been_changed() -> None:
    ops = [("Relu", "in", "hidden"), ("Negative", "hidden", "hidden"), ("Relu", "hidden", "out")]
    with pytest.raises(GradientError, match="version"):
        backward([*ops, ("Negative", "out", "sink")], {"sink": "sink_grad"})


def test_use_input_but_input_has_been_changed() -> None:
    with pytest.raises(GradientError, match="'in'.*version"):
        backward([("Abs", "in", "out"), ("Negative", "in", "in")], {"out": "out_grad"})


def test_version_mismatch() -> None:
    # x(v1) is overwritten by op 1 before anyone reads it, so op 0 must not get x(v2)'s gradient.
    ops = [("Negative", "x", "x"), ("Negative", "y", "x"), ("Negative", "x", "y")]
    try:
        backward(ops, {"y": "y_grad"})
    except GradientError as e:
        assert "version" in str(e)
    else:
        raise AssertionError("a gradient of the wrong version of 'x' was used silently")


def test_multi_use_input_sums_autosplit_gradients() -> None:
    grads, _ = backward(
        [("Negative", "in", "hidden1"), ("Negative", "in", "hidden2"), ("Add", ["hidden1", "hidden2"], "out")],
        {"out": "out_grad"},
    )
    assert grads == [
        ("AddGradient", ["out_grad", "hidden1", "hidden2"], ["hidden1_grad", "hidden2_grad"]),
        ("Negative", ["hidden2_grad"], ["in_grad"]),
        ("Negative", ["hidden1_grad"], ["_in_grad_autosplit_0"]),
        ("Sum", ["in_grad", "_in_grad_autosplit_0"], ["in_grad"]),
    ]


def test_multi_use_input_with_device_option_on_sum() -> None:
    with core.DeviceScope(core.DeviceOption(core.caffe2_pb2.PROTO_CUDA, 1)):
        net = core.Net("dev")
        net.Negative("in", "hidden1")
        net.Negative("in", "hidden2")
        net.Add(["hidden1", "hidden2"], "out")
    net.AddGradientOperators(["out"])
    sum_op = net.Proto().op[-1]
    assert sum_op.type == "Sum"
    assert (sum_op.device_option.device_type, sum_op.device_option.device_id) == (core.caffe2_pb2.PROTO_CUDA, 1)


def test_multi_use_input_but_with_no_gradient() -> None:
    grads, _ = backward(
        [("Negative", "in", "hidden1"), ("StopGradient", "in", "hidden2"), ("Add", ["hidden1", "hidden2"], "out")],
        {"out": "out_grad"},
    )
    assert grads == [
        ("AddGradient", ["out_grad", "hidden1", "hidden2"], ["hidden1_grad", "hidden2_grad"]),
        ("Negative", ["hidden1_grad"], ["in_grad"]),
    ]


def test_multi_use_input_and_multiple_versions() -> None:
    grads, _ = backward(
        [
            ("Negative", "in", "in"),
            ("Negative", "in", "hidden1"),
            ("Negative", "in", "hidden2"),
            ("Add", ["hidden1", "hidden2"], "out"),
        ],
        {"out": "out_grad"},
    )
    assert grads == [
        ("AddGradient", ["out_grad", "hidden1", "hidden2"], ["hidden1_grad", "hidden2_grad"]),
        ("Negative", ["hidden2_grad"], ["in_grad"]),
        ("Negative", ["hidden1_grad"], ["_in_grad_autosplit_0"]),
        ("Sum", ["in_grad", "_in_grad_autosplit_0"], ["in_grad"]),
        ("Negative", ["in_grad"], ["in_grad"]),
    ]


def test_multi_use_input_and_multiple_versions_big() -> None:
    ops: list[Spec] = [
        ("Negative", "in", "in"),
        ("Negative", "in", "hidden1"),
        ("Negative", "in", "hidden2"),
        ("Add", ["hidden1", "hidden2"], "in"),
        ("Negative", "in", "hidden3"),
        ("Negative", "in", "hidden4"),
        ("Negative", "in", "hidden5"),
        ("Sum", ["hidden3", "hidden4", "hidden5"], "out"),
    ]
    grads, _ = backward(ops, {"out": "out_grad"})
    # Sum passes its gradient through, so the three readers all start from out_grad.
    assert grads == [
        ("Negative", ["out_grad"], ["in_grad"]),
        ("Negative", ["out_grad"], ["_in_grad_autosplit_0"]),
        ("Negative", ["out_grad"], ["_in_grad_autosplit_1"]),
        ("Sum", ["in_grad", "_in_grad_autosplit_0", "_in_grad_autosplit_1"], ["in_grad"]),
        ("AddGradient", ["in_grad", "hidden1", "hidden2"], ["hidden1_grad", "hidden2_grad"]),
        ("Negative", ["hidden2_grad"], ["in_grad"]),
        ("Negative", ["hidden1_grad"], ["_in_grad_autosplit_0"]),
        ("Sum", ["in_grad", "_in_grad_autosplit_0"], ["in_grad"]),
        ("Negative", ["in_grad"], ["in_grad"]),
    ]
    # Numerically: in1 = -in0; h1 = h2 = -in1; in3 = h1 + h2 = 2 in0; out = 3 * (-in3) = -6 in0.
    net = core.Net("big_numeric")
    for op_type, ins, outs in ops:
        getattr(net, op_type)(ins, outs)
    net.AddGradientOperators({"out": "out_grad"})
    workspace.FeedBlob("in", np.array([1.0, -2.0], np.float32))
    workspace.FeedBlob("out_grad", np.array([1.0, 0.5], np.float32))
    workspace.RunNetOnce(net)
    np.testing.assert_allclose(workspace.FetchBlob("out"), [-6.0, 12.0])
    np.testing.assert_allclose(workspace.FetchBlob("in_grad"), [-6.0, -3.0])


def test_stop_gradient() -> None:
    grads, _ = backward(
        [("Negative", "in", "hidden"), ("StopGradient", "hidden", "hidden2"), ("Negative", "hidden2", "out")],
        {"out": "out_grad"},
    )
    assert grads == [("Negative", ["out_grad"], ["hidden2_grad"])]


def test_stop_gradient_in_place() -> None:
    grads, grad_map = backward(
        [("Negative", "in", "hidden"), ("StopGradient", "hidden", "hidden"), ("Negative", "hidden", "out")],
        {"out": "out_grad"},
    )
    assert grads == [("Negative", ["out_grad"], ["hidden_grad"])]
    assert grad_map == {"out": "out_grad"}


def test_stop_gradient_with_multi_use_operators() -> None:
    grads, grad_map = backward(
        [
            ("Negative", "in", "hidden"),
            ("Negative", "hidden", "hidden2"),
            ("StopGradient", "hidden", "hidden3"),
            ("Add", ["hidden2", "hidden3"], "out"),
        ],
        {"out": "out_grad"},
    )
    assert grads == [
        ("AddGradient", ["out_grad", "hidden2", "hidden3"], ["hidden2_grad", "hidden3_grad"]),
        ("Negative", ["hidden2_grad"], ["hidden_grad"]),
        ("Negative", ["hidden_grad"], ["in_grad"]),
    ]
    assert grad_map == {
        "out": "out_grad",
        "hidden2": "hidden2_grad",
        "hidden3": "hidden3_grad",
        "hidden": "hidden_grad",
        "in": "in_grad",
    }


@pytest.mark.parametrize("combine", ["Add", "Sub", "DotProduct"])
def test_accumulation_in_middle(combine: str) -> None:
    # x1 -> Relu -> x2 -> {Softmax -> x3, combine(x2, x3) -> x4}: x2's gradient is summed.
    ys: Mapping[str, str] | list[str] = ["x4"] if combine == "DotProduct" else {"x4": "x4_grad"}
    grads, grad_map = backward([("Relu", "x1", "x2"), ("Softmax", "x2", "x3"), (combine, ["x2", "x3"], "x4")], ys)
    sum_op = grads[-2]
    assert sum_op == ("Sum", ["x2_grad", "_x2_grad_autosplit_0"], ["x2_grad"])
    assert grad_map["x1"] == "x1_grad"


def test_add_at_leaf() -> None:
    grads, grad_map = backward(
        [("Add", ["x1", "x2"], "x4"), ("Add", ["x2", "x3"], "x5"), ("DotProduct", ["x4", "x5"], "x6")],
        {"x6": "x6_grad"},
    )
    assert grads[-1] == ("Sum", ["x2_grad", "_x2_grad_autosplit_0"], ["x2_grad"])
    assert (grad_map["x1"], grad_map["x2"], grad_map["x3"]) == ("x1_grad", "x2_grad", "x3_grad")


def test_add_and_dynamic_constant_needs_no_sum() -> None:
    # ConstantFill shaped like x2 has no gradient (Caffe2's NO_GRADIENT), so x2 has one reader to sum.
    grads, grad_map = backward(
        [
            ("FC", ["x1", "x1_w", "x1_b"], "x2"),
            ("Relu", "x2", "x2"),
            ("ConstantFill", ["x2"], "x3"),
            ("Add", ["x2", "x3"], "x4"),
            ("FC", ["x4", "x4_w", "x4_b"], "x5"),
            ("SoftmaxWithLoss", ["x5", "labels"], ["softmax", "loss"]),
        ],
        ["loss"],
    )
    assert "Sum" not in [g[0] for g in grads]
    assert grad_map["x4"] == "x4_grad" and grad_map["x1"] == "x1_grad"


def test_two_grads() -> None:
    net = core.Net("test_two_grads")
    inp, two, three = net.AddExternalInput("input", "two", "three")
    m1 = net.Mul([inp, two], "mul_1")
    m2 = net.Mul([m1, three], "mul_2")
    grad_map = net.AddGradientOperators([m2, m1])
    workspace.blobs[inp] = np.array([1], np.float32)
    workspace.blobs[two] = np.array([2], np.float32)
    workspace.blobs[three] = np.array([3], np.float32)
    workspace.RunNetOnce(net)
    # d(m2 + m1)/d input = 2 * 3 + 2
    assert workspace.blobs[grad_map[str(inp)]] == 8.0


def test_gradient_ops_record_creation_site() -> None:
    net = core.Net("sites")
    net.Negative("a", "b")
    net.AddGradientOperators(["b"])
    infos = [op.debug_info for op in net.ToNetDef().op]
    assert all("test_compat_gradients.py" in i for i in infos)


# -- core.GradientRegistry with Caffe2's own toy makers ------------------------------------------------------


def _need_all(op: Any, g_output: list[Any]) -> list[Any]:
    for name, g in zip(op.output, g_output):
        if g is None:
            raise RuntimeError(f'Need gradient for "{name}" but it is not provided.')
    return g_output


def _gis(op: Any) -> list[str]:
    return [s + "_grad" for s in op.input]


def _with_device(op: Any, src: Any) -> Any:
    if src.HasField("device_option"):
        op.device_option.CopyFrom(src.device_option)
    return op


@pytest.fixture(scope="module")
def toy_makers() -> None:
    # Test-only op types (no kernels): registered once per process, like Caffe2's test did.
    from asyncnet.training.gradients import has_gradient

    if has_gradient("CompatTestDirect"):
        return
    CreateOperator = core.CreateOperator

    @core.GradientRegistry.RegisterGradient("CompatTestDirect")
    def _direct(op: Any, g_output: list[Any]) -> tuple[Any, list[str]]:
        return _with_device(CreateOperator("DirectGradient", _need_all(op, g_output), _gis(op)), op), _gis(op)

    @core.GradientRegistry.RegisterGradient("CompatTestUseOutput")
    def _use_output(op: Any, g_output: list[Any]) -> tuple[Any, list[str]]:
        ins = list(op.output) + _need_all(op, g_output)
        return _with_device(CreateOperator("UseOutputGradient", ins, _gis(op)), op), _gis(op)

    @core.GradientRegistry.RegisterGradient("CompatTestUseInput")
    def _use_input(op: Any, g_output: list[Any]) -> tuple[Any, list[str]]:
        ins = list(op.input) + _need_all(op, g_output)
        return _with_device(CreateOperator("UseInputGradient", ins, _gis(op)), op), _gis(op)


def _ops(ops: Sequence[Any]) -> list[tuple[str, list[str], list[str], int]]:
    return [(o.type, list(o.input), list(o.output), o.device_option.device_id) for o in ops]


@pytest.mark.parametrize("device_id", [None, 1])
def test_registry_direct(toy_makers: None, device_id: int | None) -> None:
    dev = None if device_id is None else core.DeviceOption(core.caffe2_pb2.PROTO_CUDA, device_id)
    ops = [
        core.CreateOperator("CompatTestDirect", "in", "hidden", device_option=dev),
        core.CreateOperator("CompatTestDirect", "hidden", "out", device_option=dev),
    ]
    grads, grad_map = core.GradientRegistry.GetBackwardPass(ops, {"out": "out_grad"})
    d = device_id or 0
    assert _ops(grads) == [
        ("DirectGradient", ["out_grad"], ["hidden_grad"], d),
        ("DirectGradient", ["hidden_grad"], ["in_grad"], d),
    ]
    assert grad_map == {"out": "out_grad", "hidden": "hidden_grad", "in": "in_grad"}


def test_registry_direct_but_no_output_gradient_given(toy_makers: None) -> None:
    ops = [
        core.CreateOperator("CompatTestDirect", "in", "hidden"),
        core.CreateOperator("CompatTestDirect", "hidden", "out"),
    ]
    assert core.GradientRegistry.GetBackwardPass(ops, {}) == ([], {})


def test_registry_use_output_and_use_input(toy_makers: None) -> None:
    ops = [
        core.CreateOperator("CompatTestUseOutput", "in", "hidden"),
        core.CreateOperator("CompatTestUseInput", "hidden", "out"),
        core.CreateOperator("CompatTestDirect", "out", "sink"),
    ]
    grads, _ = core.GradientRegistry.GetBackwardPass(ops, {"sink": "sink_grad"})
    assert _ops(grads) == [
        ("DirectGradient", ["sink_grad"], ["out_grad"], 0),
        ("UseInputGradient", ["hidden", "out_grad"], ["hidden_grad"], 0),
        ("UseOutputGradient", ["hidden", "hidden_grad"], ["in_grad"], 0),
    ]
    g_ops, g_in = core.GradientRegistry.GetGradientForOp(ops[0], ["hidden_grad"])
    assert _ops(g_ops) == [("UseOutputGradient", ["hidden", "hidden_grad"], ["in_grad"], 0)]
    assert g_in == ["in_grad"]


def test_registry_implicit_source_and_multi_use(toy_makers: None) -> None:
    ops = [
        core.CreateOperator("CompatTestDirect", "in", "hidden1"),
        core.CreateOperator("CompatTestDirect", "in", "hidden2"),
        core.CreateOperator("CompatTestDirect", ["hidden1", "hidden2"], "out"),
    ]
    grads, _ = core.GradientRegistry.GetBackwardPass(ops, ["out"])
    assert _ops(grads) == [
        ("ConstantFill", ["out"], ["out_autogen_grad"], 0),
        ("DirectGradient", ["out_autogen_grad"], ["hidden1_grad", "hidden2_grad"], 0),
        ("DirectGradient", ["hidden2_grad"], ["in_grad"], 0),
        ("DirectGradient", ["hidden1_grad"], ["_in_grad_autosplit_0"], 0),
        ("Sum", ["in_grad", "_in_grad_autosplit_0"], ["in_grad"], 0),
    ]
    # The given operators are not modified.
    assert [list(o.output) for o in ops] == [["hidden1"], ["hidden2"], ["out"]]


def test_sparse_lengths_gradient_is_a_gradient_slice() -> None:
    # Caffe2 returned the data gradient of SparseLengthsSum as GradientSlice(indices, values):
    # one row of dOUTPUT per index, no densifying op.
    data = np.arange(8, dtype=np.float32).reshape(4, 2)
    idx = np.array([3, 0, 3], np.int64)
    lengths = np.array([2, 1], np.int32)
    op = core.CreateOperator("SparseLengthsSum", ["D", "I", "L"], ["Y"])
    ops, grads = core.GradientRegistry.GetBackwardPass([op], {"Y": "Y_grad"})
    sl = grads["D"]
    assert isinstance(sl, core.GradientSlice) and str(sl.indices) == "I"
    assert "SparseToDense" not in [o.type for o in ops]
    dy = np.array([[1.0, 2.0], [10.0, 20.0]], np.float32)
    for name, value in {"D": data, "I": idx, "L": lengths, "Y_grad": dy}.items():
        workspace.FeedBlob(name, value)
    workspace.RunOperatorsOnce(ops)
    want = np.array([dy[0], dy[0], dy[1]])  # index k belongs to segment 0, 0, 1
    np.testing.assert_array_equal(workspace.FetchBlob(str(sl.values)), want)
    (ops1, g_in) = core.GradientRegistry.GetGradientForOp(op, ["Y_grad"])
    assert isinstance(g_in[0], core.GradientSlice) and g_in[1:] == [None, None]
    assert len(ops1) == 1


def test_one_hot_encodings_stop_the_backward_pass() -> None:
    # Caffe2 declared OneHot / BatchOneHot / BatchBucketOneHot / SegmentOneHot NO_GRADIENT: a loss
    # that reads a one-hot encoding differentiates the other inputs and stops at the encoding.
    net = core.Net("onehot")
    net.OneHot(["labels", "size"], ["oh"])
    net.Mul(["oh", "w"], ["prod"])
    net.SumElements(["prod"], ["loss"])
    grads = net.AddGradientOperators(["loss"])
    assert "w" in grads and "oh" in grads and "labels" not in grads and "size" not in grads
    workspace.FeedBlob("labels", np.array([1, 0], np.int64))
    workspace.FeedBlob("size", np.array([3], np.int64))
    workspace.FeedBlob("w", np.ones((2, 3), np.float32))
    workspace.RunNetOnce(net)
    assert workspace.FetchBlob("w_grad").tolist() == [[0, 1, 0], [1, 0, 0]]
