"""The compat API gaps of issue 15: workspace and core helpers Caffe2 scripts call, the Python op,
Net.reroute_tensor, Clone into control-op subnets, brew.layer_norm / instance_norm."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from asyncnet.compat import brew, caffe2_pb2, core, model_helper, workspace
from asyncnet.errors import AsyncNetError


def test_workspace_helpers() -> None:
    workspace.ResetWorkspace("/tmp/root")
    assert workspace.RootFolder() == "/tmp/root"
    ref = workspace.CreateBlob("fresh")
    assert str(ref) == "fresh" and workspace.HasBlob("fresh")
    workspace.FeedBlob("a", np.zeros((3, 4), np.float32))
    workspace.FeedBlob("s", np.array([b"ab", b"cde"], dtype=object))
    assert workspace.GetBlobSizeBytes("a") == 48 and workspace.GetBlobSizeBytes("s") == 5
    assert "Relu" in workspace.RegisteredOperators() and "SparseLengthsSum" in workspace.RegisteredOperators()
    assert workspace.NumGpuDevices() == 0 and workspace.NumCudaDevices() == 0
    assert workspace.GpuDeviceType == caffe2_pb2.CUDA
    with pytest.raises(RuntimeError):
        workspace.FetchBlob("nope")


def test_create_net_binds_inputs_at_creation() -> None:
    workspace.ResetWorkspace()
    net = core.Net("needs_x")
    net.Relu(["x"], ["y"])
    net.Relu(["y"], ["z"])
    with pytest.raises(RuntimeError, match="non-existing input"):
        workspace.CreateNet(net)
    workspace.CreateNet(net, input_blobs=["x"])
    workspace.FeedBlob("x", np.array([-1.0, 2.0], np.float32))
    workspace.RunNet("needs_x")
    assert workspace.FetchBlob("z").tolist() == [0.0, 2.0]


def test_create_net_sees_the_outputs_of_nets_created_before() -> None:
    # Caffe2's CreateNet creates the blobs its ops write, so a second net may read them at creation
    # (rand_quantization_op_speed_test creates its encoder before anything has run).
    workspace.ResetWorkspace()
    first = core.Net("makes_d")
    first.Sub(["a", "b"], ["d"])
    second = core.Net("reads_d")
    second.Relu(["d"], ["r"])
    workspace.FeedBlob("a", np.array([3.0, 1.0], np.float32))
    workspace.FeedBlob("b", np.array([1.0, 2.0], np.float32))
    workspace.CreateNet(first)
    workspace.CreateNet(second)
    workspace.RunNet("makes_d")
    workspace.RunNet("reads_d")
    assert workspace.FetchBlob("r").tolist() == [2.0, 0.0]
    # A reset forgets them again.
    workspace.ResetWorkspace()
    with pytest.raises(RuntimeError, match="non-existing input"):
        workspace.CreateNet(second)


def test_infer_shapes_and_types() -> None:
    workspace.ResetWorkspace()
    net = core.Net("shapes")
    net.FC(["x", "w", "b"], ["y"])
    net.Cast(["y"], ["yi"], to=core.DataType.INT32)
    shapes, types = workspace.InferShapesAndTypes([net], {"x": [4, 3], "w": [5, 3], "b": [5]})
    assert shapes["y"] == [4, 5] and types["y"] == caffe2_pb2.TensorProto.FLOAT
    assert types["yi"] == caffe2_pb2.TensorProto.INT32


def test_infer_shapes_keeps_workspace_blobs_an_op_cannot_size() -> None:
    # Split with its sizes in a blob: inference cannot size the pieces; as in Caffe2's inference
    # from the workspace, the existing blobs' shapes are reported.
    workspace.FeedBlob("x", np.ones((5, 2), np.float32))
    workspace.FeedBlob("sizes", np.array([2, 3], np.int32))
    split = core.CreateOperator("Split", ["x", "sizes"], ["p", "q"], axis=0)
    net = core.Net("split")
    net.Proto().op.extend([split])
    shapes, _ = workspace.InferShapesAndTypes([net])
    assert "p" not in shapes and shapes["x"] == [5, 2] and shapes["sizes"] == [2]
    workspace.RunOperatorOnce(split)
    shapes, types = workspace.InferShapesAndTypes([net])
    assert shapes["p"] == [2, 2] and shapes["q"] == [3, 2] and types["q"] == caffe2_pb2.TensorProto.FLOAT


def test_core_device_helpers_and_gradient_slice() -> None:
    assert core.IsGPUDeviceType(caffe2_pb2.CUDA) and not core.IsGPUDeviceType(caffe2_pb2.CPU)
    a, b = core.DeviceOption(caffe2_pb2.CPU, 0), core.DeviceOption(caffe2_pb2.CPU, 3, random_seed=1)
    assert core.device_option_equal(a, b) and not core.device_option_equal(a, b, ignore_random_seed=False)
    assert not core.device_option_equal(core.DeviceOption(caffe2_pb2.CUDA, 0), core.DeviceOption(caffe2_pb2.CUDA, 1))
    op = core.CreateOperator("Add", ["p", "q"], ["r"], device_option=core.DeviceOption(caffe2_pb2.CUDA, 1))
    ins, outs = core.InferOpBlobDevices(op)
    assert len(ins) == 2 and len(outs) == 1 and ins[0].device_id == 1
    in_map, out_map = core.InferOpBlobDevicesAsDict(op)
    assert set(in_map) == {"p", "q"} and set(out_map) == {"r"}
    gs = core.GradientSlice(indices="i", values="v")
    assert gs.indices == "i" and gs.values == "v"
    with core.DeviceScope(caffe2_pb2.CPU):
        assert core.CreateOperator("Relu", ["x"], ["y"]).device_option.device_type == caffe2_pb2.CPU


def test_get_ssa() -> None:
    net = core.Net("ssa")
    net.Relu(["x"], ["y"])
    net.Relu(["y"], ["y"])
    ssa, undef, outs = core.get_ssa(net)
    assert ssa[0] == ([("x", 0)], [("y", 1)]) and ssa[1] == ([("y", 1)], [("y", 2)])
    assert undef == ["x"] and outs == ["y"]


def test_create_python_operator_forward_and_gradient() -> None:
    def square(inputs: list[Any], outputs: list[Any]) -> None:
        outputs[0].reshape(inputs[0].shape)
        outputs[0].data[...] = inputs[0].data ** 2

    def square_grad(inputs: list[Any], outputs: list[Any]) -> None:
        x, _, dy = inputs
        outputs[0].feed(2 * x.data * dy.data)

    workspace.ResetWorkspace()
    op = core.CreatePythonOperator(square, ["x"], ["y"], grad_f=square_grad)
    workspace.FeedBlob("x", np.array([1.0, -3.0], np.float32))
    workspace.RunOperatorOnce(op)
    assert workspace.FetchBlob("y").tolist() == [1.0, 9.0]
    grads, _ = core.GetBackwardPass([op], {"y": "y_grad"})
    assert [g.type for g in grads] == ["InProcessPythonGradient"]
    workspace.FeedBlob("y_grad", np.ones(2, np.float32))
    workspace.RunOperatorOnce(grads[0])
    assert workspace.FetchBlob("x_grad").tolist() == [2.0, -6.0]
    bad = core.CreateOperator("InProcessPython", ["x"], ["z"], token="never_registered")
    with pytest.raises(AsyncNetError, match="never_registered"):
        workspace.RunOperatorOnce(bad)


def test_net_python_adds_an_in_process_op() -> None:
    seen: list[list[float]] = []

    def record(inputs: list[Any], outputs: list[Any]) -> None:
        seen.append(inputs[0].data.tolist())

    def double(inputs: list[Any], outputs: list[Any]) -> None:
        outputs[0].feed(inputs[0].data * 2)

    net = core.Net("py")
    net.Python(record)(["x"], 0)  # no outputs, as Caffe2's net.Python(f)([blobs], 0)
    y = net.Python(double)(["x"], ["y"])
    workspace.FeedBlob("x", np.array([1.5, 2.0], np.float32))
    workspace.RunNetOnce(net)
    assert seen == [[1.5, 2.0]] and str(y) == "y"
    assert workspace.FetchBlob("y").tolist() == [3.0, 4.0]
    assert [o.type for o in net.Proto().op] == ["InProcessPython", "InProcessPython"]


def test_reroute_tensor() -> None:
    net = core.Net("reroute")
    net.Relu(["x"], ["a"])
    net.Sigmoid(["a"], ["b"])
    net.Tanh(["a"], ["c"])
    clip = core.CreateOperator("Clip", ["a"], ["a_clipped"], min=0.0, max=1.0)
    assert net.reroute_tensor("a", clip) == 2
    ops = net.Proto().op
    assert [o.type for o in ops] == ["Relu", "Clip", "Sigmoid", "Tanh"]
    assert list(ops[2].input) == ["a_clipped"] and list(ops[1].input) == ["a"]


def test_clone_remaps_inside_control_op_subnets() -> None:
    then_net = core.Net("then")
    then_net.Relu(["x"], ["y"])
    net = core.Net("outer")
    net.If(["cond"], ["y"], then_net=then_net.Proto())
    clone = net.Clone("outer_clone", blob_remap={"x": "x2", "y": "y2"})
    sub = clone.Proto().op[0].arg[0].n
    assert list(sub.op[0].input) == ["x2"] and list(sub.op[0].output) == ["y2"]
    assert list(clone.Proto().op[0].output) == ["y2"]


def test_brew_layer_norm_and_instance_norm() -> None:
    workspace.ResetWorkspace()
    model = model_helper.ModelHelper(name="norms")
    out, mean, std = brew.layer_norm(model, "x", "ln", dim_in=4, axis=1, epsilon=1e-5, initial_scale=2.0)
    inorm = brew.instance_norm(model, "img", "inorm", dim_in=2)
    workspace.RunNetOnce(model.param_init_net)
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    img = np.random.default_rng(1).normal(size=(1, 2, 3, 3)).astype(np.float32)
    workspace.FeedBlob("x", x)
    workspace.FeedBlob("img", img)
    workspace.RunNetOnce(model.net)
    norm = (x - x.mean(axis=1, keepdims=True)) / np.sqrt(x.var(axis=1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(workspace.FetchBlob(out), 2.0 * norm, rtol=1e-4, atol=1e-5)
    got = workspace.FetchBlob(inorm)
    want = (img - img.mean(axis=(2, 3), keepdims=True)) / np.sqrt(img.var(axis=(2, 3), keepdims=True) + 1e-5)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert {str(p) for p in model.params} >= {"ln_scale", "ln_bias", "inorm_s", "inorm_b"}


@pytest.mark.timeout(30)
def test_run_plan_in_background(no_thread_leak: None) -> None:
    workspace.ResetWorkspace()
    net = core.Net("bg_net")
    net.ConstantFill([], ["c"], shape=[2], value=3.0)
    plan = core.Plan("bg_plan")
    plan.AddStep(core.execution_step("step", net))
    handle = workspace.RunPlanInBackground(plan)
    assert handle.wait(10) and handle.is_done() and handle.is_succeeded()
    assert workspace.FetchBlob("c").tolist() == [3.0, 3.0]
    bad = core.Net("bad_net")
    bad.ThrowException([], [], message="boom")
    failing = core.Plan("bad_plan")
    failing.AddStep(core.execution_step("s", bad))
    h2 = workspace.RunPlanInBackground(failing)
    with pytest.raises(Exception, match="boom"):
        h2.wait(10)
    assert h2.is_done() and not h2.is_succeeded()


def test_immediate_mode_runs_ops_as_they_are_added() -> None:
    workspace.StartImmediate(i_know=True)
    try:
        assert workspace.IsImmediate()
        net = core.Net("imm")
        workspace.FeedImmediate("x", np.array([-1.0, 2.0], np.float32))
        net.Relu(["x"], ["y"])
        assert workspace.FetchImmediate("y").tolist() == [0.0, 2.0]
        assert set(workspace.ImmediateBlobs()) == {"x", "y"}
        assert not workspace.HasBlob("y")  # the current workspace is untouched
    finally:
        workspace.StopImmediate()
    assert not workspace.IsImmediate()
    with pytest.raises(RuntimeError):
        workspace.FetchImmediate("y")


def test_errors_are_runtime_errors_as_in_caffe2() -> None:
    workspace.ResetWorkspace()
    workspace.FeedBlob("x", np.ones(2, np.float32))
    with pytest.raises(RuntimeError):  # fails while running
        workspace.RunOperatorOnce(core.CreateOperator("Reshape", ["x"], ["y", "old"], shape=[3, -1]))
    bad_arg = core.CreateOperator("LearningRate", ["x"], ["lr"], base_lr=0.1, policy="no_such_policy")
    with pytest.raises(RuntimeError) as ei:  # refused while preparing
        workspace.RunOperatorOnce(bad_arg)
    assert isinstance(ei.value, ValueError)  # still the original kind
    missing = core.CreateOperator("Relu", ["nope"], ["y"])
    with pytest.raises(RuntimeError):
        workspace.RunOperatorOnce(missing)
    unknown = core.CreateOperator("NoSuchOpType", ["x"], ["y"])
    with pytest.raises(RuntimeError):
        workspace.RunOperatorOnce(unknown)
    net = core.Net("bad_args")
    net.LearningRate(["x"], ["lr"], base_lr=0.1, policy="no_such_policy")
    with pytest.raises(RuntimeError, match="no_such_policy"):
        workspace.CreateNet(net)


def test_save_accepts_serialization_options(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    workspace.ResetWorkspace()
    workspace.FeedBlob("w", np.arange(3, dtype=np.float32))
    opts = caffe2_pb2.SerializationOptions()
    save = core.CreateOperator("Save", ["w"], [], db="ck.minidb", db_type="minidb", absolute_path=1, options=opts)
    workspace.RunOperatorOnce(save)
    workspace.ResetWorkspace()
    workspace.RunOperatorOnce(core.CreateOperator("Load", [], ["w"], db="ck.minidb", db_type="minidb", absolute_path=1))
    assert workspace.FetchBlob("w").tolist() == [0.0, 1.0, 2.0]
