"""Workspace: blobs, nets, independence, errors."""

from __future__ import annotations

import numpy as np
import pytest

from asyncnet.errors import BlobNotFoundError, NetDefinitionError, NetNotFoundError, OperatorError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import make_argument
from asyncnet.workspace import Workspace


def _relu_net(name: str = "r") -> pb.NetDef:
    net = pb.NetDef(name=name, external_input=["x"], external_output=["y"])
    net.op.add(type="Relu", input=["x"], output=["y"])
    return net


def test_feed_fetch_has_remove_list() -> None:
    ws = Workspace()
    obj = {"any": "python object"}
    ws.feed("a", np.arange(3))
    ws.feed("b", obj)
    assert ws.has("a") and "b" in ws and not ws.has("c")
    assert ws.blobs() == ["a", "b"]
    assert ws.fetch("b") is obj
    ws.remove("a")
    assert ws.blobs() == ["b"]
    with pytest.raises(BlobNotFoundError, match="did you mean 'b'"):
        ws.fetch("bb")
    with pytest.raises(KeyError):  # also a KeyError for callers catching builtins
        ws.fetch("zz")


def test_feed_tensor_proto_converts() -> None:
    ws = Workspace()
    ws.feed("t", pb.TensorProto(dims=[2], float_data=[1.0, 2.0]))
    np.testing.assert_array_equal(ws.fetch("t"), [1.0, 2.0])


def test_workspaces_are_independent() -> None:
    a, b = Workspace(), Workspace()
    a.feed("x", np.ones(2, np.float32))
    assert not b.has("x")
    a.create_net(_relu_net())
    assert a.nets() == ["r"] and b.nets() == []


def test_create_and_run_net_repeatedly() -> None:
    ws = Workspace()
    net = ws.create_net(_relu_net())
    for v in (-1.0, 3.0):
        ws.feed("x", np.array([v], np.float32))
        ws.run_net("r")
        assert ws.fetch("y")[0] == max(v, 0.0)
    assert ws.net("r") is net
    with pytest.raises(NetNotFoundError, match="did you mean 'r'"):
        ws.run_net("rr")


def test_missing_input_is_named() -> None:
    ws = Workspace()
    net = pb.NetDef(name="m")
    net.op.add(type="Relu", input=["x"], output=["h"])
    net.op.add(type="Add", input=["h", "never_fed"], output=["y"])
    ws.feed("x", np.ones(2, np.float32))
    with pytest.raises(BlobNotFoundError, match=r"op #1 Add reads blob 'never_fed'.*nobody fed"):
        ws.run_net_once(net)


def test_declared_external_input_nothing_reads_need_not_exist() -> None:
    # Caffe2 checks only the blobs ops read; Caffe2's AddExternalInputs(["x"]) declares "['x']".
    ws = Workspace()
    net = pb.NetDef(name="decl")
    net.external_input.extend(["['x']", "x"])
    net.op.add(type="Relu", input=["x"], output=["y"])
    ws.feed("x", np.array([-1.0, 2.0], np.float32))
    ws.run_net_once(net)
    assert ws.fetch("y").tolist() == [0.0, 2.0]
    # A declared input an op does read still has to be fed.
    ws2 = Workspace()
    with pytest.raises(BlobNotFoundError, match=r"op #0 Relu reads blob 'x'"):
        ws2.run_net_once(net)


def test_operator_failure_names_op_and_chains_cause() -> None:
    ws = Workspace()
    net = pb.NetDef(name="f")
    op = net.op.add(type="Reshape", input=["x"], output=["y"], name="bad_reshape", debug_info="model.py:12")
    op.arg.append(make_argument("shape", [5]))
    ws.feed("x", np.ones(4, np.float32))
    with pytest.raises(OperatorError) as e:
        ws.run_net_once(net)
    msg = str(e.value)
    assert "op #0 Reshape 'bad_reshape'" in msg and "model.py:12" in msg and "net 'f'" in msg
    assert e.value.__cause__ is not None


def test_run_operator_once() -> None:
    ws = Workspace()
    ws.feed("a", np.array([1, 2], np.int32))
    ws.feed("b", np.array([10, 20], np.int32))
    ws.run_operator_once(pb.OperatorDef(type="Add", input=["a", "b"], output=["c"]))
    np.testing.assert_array_equal(ws.fetch("c"), [11, 22])
    with pytest.raises(BlobNotFoundError, match="nope"):
        ws.run_operator_once(pb.OperatorDef(type="Relu", input=["nope"], output=["c"]))


def test_external_output_never_produced() -> None:
    net = _relu_net()
    net.external_output.append("ghost")
    with pytest.raises(NetDefinitionError, match="ghost"):
        Workspace().create_net(net)


def test_reset_clears_everything() -> None:
    ws = Workspace()
    ws.feed("x", np.ones(1))
    ws.create_net(_relu_net())
    ws.reset()
    assert ws.blobs() == [] and ws.nets() == []


def test_private_names_stay_the_childs_own() -> None:
    parent = Workspace("params")
    parent.feed("w", np.ones(2, np.float32))
    parent.feed("data", np.zeros(2, np.float32))  # an init net's placeholder
    child = Workspace(parent=parent, private=["data"])
    assert child.cell("w") is parent.cell("w")  # shared, not copied
    assert child.cell("data") is not parent.cell("data")
    assert not child.has("data") and "data" not in child.blobs() and child.has("w")
    with pytest.raises(BlobNotFoundError):
        child.fetch("data")
    child.feed("data", np.full(2, 5.0, np.float32))
    np.testing.assert_array_equal(parent.fetch("data"), [0.0, 0.0])
    child.run_operator_once(pb.OperatorDef(type="Add", input=["data", "w"], output=["y"]))
    np.testing.assert_array_equal(child.fetch("y"), [6.0, 6.0])
    assert not parent.has("y")
