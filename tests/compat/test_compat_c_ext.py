"""workspace.C (private workspaces, OpSchema), core.C, and workspace's device queries, blob
serialization, GetNetName and GetOperatorCost."""

from __future__ import annotations

import numpy as np
import pytest

from asyncnet.compat import caffe2_pb2, core, workspace
from asyncnet.errors import UnsupportedError


def test_private_workspace_is_independent_of_the_current_one() -> None:
    ws = workspace.C.Workspace()
    ws.create_blob("X").feed(np.array([-1.0, 3.0], dtype=np.float32))
    assert not workspace.HasBlob("X")
    ws.run(core.CreateOperator("Relu", ["X"], ["Y"]))
    np.testing.assert_array_equal(ws.blobs["Y"].fetch(), [0.0, 3.0])
    assert "Y" in ws.blobs and "Q" not in ws.blobs
    assert ws.fetch_blob("Y").dtype == np.float32
    with pytest.raises(KeyError, match="Can't find blob: Q"):
        ws.blobs["Q"]


def test_private_workspace_nets() -> None:
    ws = workspace.C.Workspace()
    ws.create_blob("X").feed(np.array([2.0], dtype=np.float32))
    net = core.Net("double")
    net.Add(["X", "X"], "Y")
    handle = ws.create_net(net)
    handle.run()
    handle.run()
    np.testing.assert_array_equal(ws.blobs["Y"].fetch(), [4.0])
    assert list(ws.nets) == ["double"]
    with pytest.raises(RuntimeError, match="already has a net"):
        ws.create_net(net.Proto())
    ws.run(net.Proto())  # a NetDef runs once without being kept
    assert ws.create_net(net.Proto().SerializeToString(), overwrite=True).name == "double"


def test_op_schema_and_core_c() -> None:
    s = workspace.C.OpSchema.get("Concat")
    assert s is not None and s.name == "Concat" and s.min_input == 1 and not s.private
    assert workspace.C.OpSchema.get("NoSuchOpType") is None
    assert core.C is workspace.C
    assert "minidb" in core.C.registered_dbs()
    assert core.C.builtin_cpu_supports_avx2() is False


def test_cpu_build_device_queries() -> None:
    assert workspace.GetCuDNNVersion() == 0 and workspace.GetCUDAVersion() == 0
    assert workspace.GetGPUMemoryInfo() is None and workspace.GetDeviceProperties(0) is None
    assert workspace.GetGpuPeerAccessPattern().size == 0
    assert workspace.has_fbgemm is False and workspace.is_asan is False


def test_serialize_and_deserialize_blob() -> None:
    x = np.arange(6, dtype=np.int64).reshape(2, 3)
    workspace.FeedBlob("x", x)
    proto = caffe2_pb2.BlobProto()
    proto.ParseFromString(workspace.SerializeBlob("x"))
    assert proto.name == "x" and proto.HasField("tensor")
    assert list(proto.tensor.dims) == [2, 3] and proto.tensor.data_type == caffe2_pb2.TensorProto.INT64
    assert proto.tensor.device_detail.device_type == caffe2_pb2.CPU
    workspace.DeserializeBlob("y", proto.SerializeToString())
    np.testing.assert_array_equal(workspace.FetchBlob("y"), x)


def test_get_net_name() -> None:
    net = core.Net("my_net")
    assert workspace.GetNetName(net) == "my_net"
    assert workspace.GetNetName(net.Proto()) == "my_net"
    assert workspace.GetNetName("n") == "n"


def test_operator_cost_of_data_movement_ops() -> None:
    workspace.FeedBlob("a", np.ones((2, 3), np.int32))
    workspace.FeedBlob("b", np.ones((2, 1), np.int32))
    concat = core.CreateOperator("Concat", ["a", "b"], ["c", "split_info"])
    flops, written, read = workspace.GetOperatorCost(concat, concat.input)
    # c is 2x4 int32 and split_info holds 2 int32 lengths; nothing is computed.
    assert (flops, written, read) == (0, 2 * 4 * 4 + 2 * 4, 6 * 4 + 2 * 4)
    split = core.CreateOperator("Split", ["a"], ["s1", "s2", "s3"])
    assert tuple(workspace.GetOperatorCost(split, split.input)) == (0, 24, 24)


def test_operator_cost_of_fc_and_unknown_ops() -> None:
    workspace.FeedBlob("X", np.ones((5, 4), np.float32))
    workspace.FeedBlob("W", np.ones((3, 4), np.float32))
    workspace.FeedBlob("B", np.ones((3,), np.float32))
    fc = core.CreateOperator("FC", ["X", "W", "B"], ["Y"])
    cost = workspace.GetOperatorCost(fc, fc.input)
    assert cost.flops == 2 * 5 * 3 * 4 and cost.bytes_written == 5 * 3 * 4
    assert cost.bytes_read == (20 + 12 + 3) * 4
    with pytest.raises(UnsupportedError, match="no cost function for op type 'Softmax'"):
        workspace.GetOperatorCost(core.CreateOperator("Softmax", ["X"], ["S"]), ["X"])


def test_string_tensors_are_fetched_as_bytes() -> None:
    # Caffe2 stored std::string: text fed as str came back as UTF-8 bytes.
    workspace.FeedBlob("s", np.array(["a", "bé"]))
    got = workspace.FetchBlob("s")
    assert got.dtype == object and got.tolist() == [b"a", "bé".encode()]
    workspace.FeedBlob("i", np.array([0, 12], np.int32))
    workspace.RunOperatorOnce(core.CreateOperator("Cast", ["i"], ["t"], to=core.DataType.STRING))
    assert workspace.FetchBlob("t").tolist() == [b"0", b"12"]
    ws = workspace.C.Workspace()
    ws.create_blob("s").feed(np.array(["x"]))
    assert ws.blobs["s"].fetch().tolist() == [b"x"]


def test_operator_cost_with_value_dependent_output_shapes() -> None:
    workspace.FeedBlob("x", np.ones((2, 5), np.float32))
    workspace.FeedBlob("sizes", np.array([1, 4], np.int32))
    split = core.CreateOperator("Split", ["x", "sizes"], ["p", "q"], axis=1)
    with pytest.raises(UnsupportedError, match="depends on input values"):
        workspace.GetOperatorCost(split, split.input)
    workspace.RunOperatorOnce(split)
    assert tuple(workspace.GetOperatorCost(split, split.input)) == (0, 40, 40 + 8)


def test_run_functions_take_serialized_protos() -> None:
    workspace.FeedBlob("x", np.array([-2.0, 2.0], np.float32))
    op = core.CreateOperator("Relu", ["x"], ["y"])
    workspace.RunOperatorOnce(op.SerializeToString())
    np.testing.assert_array_equal(workspace.FetchBlob("y"), [0.0, 2.0])
    net = core.Net("neg")
    net.Negative(["x"], ["z"])
    workspace.RunNetOnce(net.Proto().SerializeToString())
    np.testing.assert_array_equal(workspace.FetchBlob("z"), [2.0, -2.0])
    plan = core.Plan("p")
    plan.AddStep(core.execution_step("s", net))
    workspace.FeedBlob("x", np.array([1.0], np.float32))
    workspace.RunPlan(plan.Proto().SerializeToString())
    np.testing.assert_array_equal(workspace.FetchBlob("z"), [-1.0])
    workspace.CreateNet(net.Proto().SerializeToString(), overwrite=True)  # RunPlan created it
    assert workspace.RunNet("neg")


def test_core_output_to_list_workspace_and_build_flags() -> None:
    a, b = core.BlobReference("a"), core.BlobReference("b")
    assert core.output_to_list(a) == [a] and core.output_to_list((a, b)) == [a, b]
    with pytest.raises(TypeError, match="BlobReference, list or tuple"):
        core.output_to_list("a")
    assert core.workspace is workspace
    assert workspace.C.define_caffe2_no_operator_schema is False
    assert workspace.C.get_build_options()["USE_CUDA"] == "OFF"


def test_fetched_arrays_are_copies() -> None:
    workspace.FeedBlob("a", np.zeros(3, np.float32))
    got = workspace.FetchBlob("a")
    got[0] = 5.0
    assert workspace.FetchBlob("a").tolist() == [0.0, 0.0, 0.0]
    ws = workspace.C.Workspace()
    ws.create_blob("b").feed(np.ones(2, np.float32))
    ws.blobs["b"].fetch()[:] = 7.0
    assert ws.blobs["b"].fetch().tolist() == [1.0, 1.0]
