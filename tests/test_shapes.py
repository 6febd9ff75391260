"""Net-level shape inference (asyncnet.shapes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from asyncnet.errors import ParseError, ShapeInferenceError, UnknownOperatorError
from asyncnet.opinfo import OpInfo
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.qtensor import Int8Tensor
from asyncnet.registry import OpRegistry
from asyncnet.schema import TensorInfo, same_as_input
from asyncnet.serde import make_argument, read_net
from asyncnet.shapes import (
    agrees,
    infer_shapes,
    infer_with_init,
    info_of,
    join,
    parse_value_info,
    read_value_info,
)
from asyncnet.workspace import Workspace
from tests.conftest import ROOT, realnets_path

F32 = np.dtype(np.float32)


def op(op_type: str, inputs: list[str], outputs: list[str], **args: Any) -> pb.OperatorDef:
    o = pb.OperatorDef(type=op_type, input=inputs, output=outputs)
    for k, v in args.items():
        o.arg.append(make_argument(k, v))
    return o


def net(*ops: pb.OperatorDef, name: str = "t") -> pb.NetDef:
    n = pb.NetDef(name=name)
    n.op.extend(ops)
    return n


def ti(*shape: int | None, dtype: Any = F32) -> TensorInfo:
    return TensorInfo(tuple(shape), np.dtype(dtype))


MLP = net(
    op("FC", ["data", "w1", "b1"], ["h"]),
    op("Relu", ["h"], ["h"]),
    op("FC", ["h", "w2", "b2"], ["logits"]),
    op("Softmax", ["logits"], ["prob"]),
)
MLP_INPUTS = {"data": ti(8, 5), "w1": ti(7, 5), "b1": ti(7), "w2": ti(3, 7), "b2": ti(3)}


def test_walks_ops_in_order_and_records_every_blob() -> None:
    r = infer_shapes(MLP, MLP_INPUTS)
    assert r.blobs["h"] == ti(8, 7)
    assert r.blobs["logits"] == ti(8, 3)
    assert r.blobs["prob"] == ti(8, 3)
    assert r["data"] == ti(8, 5)
    assert [len(o) for o in r.op_outputs] == [1, 1, 1, 1]
    assert r.op_outputs[2] == [ti(8, 3)]
    assert r.op_inputs[0] == [ti(8, 5), ti(7, 5), ti(7)]
    assert r.unknown_ops == [] and r.missing == []


def test_partially_known_batch_dimension_flows_through() -> None:
    r = infer_shapes(MLP, {**MLP_INPUTS, "data": ti(None, 5)})
    assert r.blobs["prob"] == ti(None, 3)


def test_in_place_write_overwrites_the_blob() -> None:
    n = net(op("Relu", ["x"], ["x"]), op("ConstantFill", ["x"], ["x"], extra_shape=[2]), op("Relu", ["x"], ["y"]))
    r = infer_shapes(n, {"x": ti(2, 4)})
    assert r.blobs["x"] == ti(2, 4, 2)
    assert r.op_inputs[2] == [ti(2, 4, 2)]
    assert r.op_outputs[0] == [ti(2, 4)]


def test_unknown_input_is_unknown_or_strict_error() -> None:
    inputs = dict(MLP_INPUTS)
    del inputs["w2"], inputs["b2"]
    r = infer_shapes(MLP, inputs)
    assert r.missing == ["w2", "b2"]
    assert r.blobs["w2"] == TensorInfo()
    assert r.blobs["logits"].shape in (None, (8, None))
    with pytest.raises(ShapeInferenceError, match=r"op #2 FC.*'w2'"):
        infer_shapes(MLP, inputs, strict=True)


def test_inconsistent_shapes_name_the_op_blobs_and_shapes() -> None:
    bad = {**MLP_INPUTS, "w2": ti(3, 9)}
    with pytest.raises(ShapeInferenceError) as e:
        infer_shapes(MLP, bad)
    msg = str(e.value)
    assert "op #2 FC" in msg
    assert "'w2' (3, 9)" in msg and "'h' (8, 7)" in msg


def test_ops_without_infer_give_unknown_outputs_and_are_listed() -> None:
    reg = OpRegistry()

    @reg.op("Known", infer=same_as_input())
    def known(o: OpInfo) -> Any:
        return lambda x: (x,)

    @reg.op("Opaque")
    def opaque(o: OpInfo) -> Any:
        return lambda x: (x,)

    n = net(op("Known", ["a"], ["b"]), op("Opaque", ["b"], ["c"]), op("Known", ["c"], ["d"]))
    r = infer_shapes(n, {"a": ti(2, 3)}, registry=reg)
    assert r.unknown_ops == [1]
    assert r.blobs["b"] == ti(2, 3)
    assert r.blobs["c"] == TensorInfo() and r.blobs["d"] == TensorInfo()


def test_unknown_op_type_is_unknown_unless_strict() -> None:
    n = net(op("NoSuchOp", ["a"], ["b"]), op("Relu", ["b"], ["c"]))
    r = infer_shapes(n, {"a": ti(2)})
    assert r.unknown_ops == [0]
    assert r.blobs["c"].shape is None
    with pytest.raises(UnknownOperatorError, match="NoSuchOp"):
        infer_shapes(n, {"a": ti(2)}, strict=True)


def test_infer_returning_too_few_outputs_is_an_error() -> None:
    reg = OpRegistry()

    @reg.op("Two", outputs=2, infer=lambda o, ins: [ins[0]])
    def two(o: OpInfo) -> Any:
        return lambda x: (x, x)

    with pytest.raises(ShapeInferenceError, match=r"op #0 Two.*1 output info\(s\), expected 2"):
        infer_shapes(net(op("Two", ["a"], ["b", "c"])), {"a": ti(1)}, registry=reg)


def test_info_of_arrays_scalars_and_quantized_tensors() -> None:
    assert info_of(np.zeros((2, 3), np.int32)) == ti(2, 3, dtype=np.int32)
    assert info_of(3.0) == TensorInfo((), np.dtype(np.float64))
    q = Int8Tensor(np.zeros((1, 4, 4, 2), np.uint8), 0.5, 3)
    assert info_of(q) == ti(1, 4, 4, 2, dtype=np.uint8)


def test_value_info_files(tmp_path: Path) -> None:
    got = read_value_info(realnets_path("caffe2_model_zoo", "resnet50", "value_info.json"))
    assert got == {"gpu_0/data": ti(1, 3, 224, 224)}
    assert parse_value_info({"x": [2, [4]]}) == {"x": ti(4, dtype=np.int32)}
    with pytest.raises(ParseError, match="entry 'x'"):
        parse_value_info({"x": [1, [1, -2]]})
    with pytest.raises(ParseError, match="blob name"):
        parse_value_info([1, 2])
    bad = tmp_path / "v.json"
    bad.write_text("{nope", encoding="utf-8")
    with pytest.raises(ParseError, match="not valid JSON"):
        read_value_info(bad)
    with pytest.raises(ParseError, match="no such file"):
        read_value_info(tmp_path / "missing.json")
    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps({"d": [1, [1, 2]]}), encoding="utf-8")
    assert read_value_info(ok) == {"d": ti(1, 2)}


def test_init_net_gives_parameter_shapes_and_combines_with_predict() -> None:
    init = read_net(ROOT / "nets" / "mlp_init.pbtxt")
    predict = read_net(ROOT / "nets" / "mlp_predict.pbtxt")
    params = infer_shapes(init, {}).blobs
    assert set(params) >= {"fc1_w", "fc1_b", "fc2_w", "fc2_b"}
    assert all(t.known for t in params.values())
    with Workspace() as ws:
        ws.run_net_once(init)
        for name, t in params.items():
            assert info_of(ws.fetch(name)) == t
        k = ws.fetch("fc1_w").shape[1]
        data = np.zeros((5, k), np.float32)
        ws.feed("data", data)
        ws.run_net_once(predict)
        r = infer_with_init(init, predict, {"data": info_of(data)})
        for name in ("fc1", "fc2", "prob"):
            assert r.blobs[name] == info_of(ws.fetch(name))


def test_if_branches_are_joined() -> None:
    then_net = net(op("ConstantFill", [], ["y"], shape=[2, 3], value=1.0), op("Relu", ["x"], ["z"]), name="then")
    else_net = net(op("ConstantFill", [], ["y"], shape=[2, 5], value=1.0), name="else")
    if_op = op("If", ["c", "x"], ["y"])
    if_op.arg.append(pb.Argument(name="then_net", n=then_net))
    if_op.arg.append(pb.Argument(name="else_net", n=else_net))
    r = infer_shapes(net(if_op), {"c": TensorInfo((), np.dtype(bool)), "x": ti(4)})
    assert r.blobs["y"] == ti(2, None)
    assert r.op_outputs[0] == [ti(2, None)]
    assert r.blobs["z"] == ti(4)  # written by one branch only


def test_join_and_agrees() -> None:
    assert join(ti(2, 3), ti(2, 4)) == ti(2, None)
    assert join(ti(2, 3), ti(2)) == TensorInfo(None, F32)
    assert join(ti(2), ti(2, dtype=np.int32)) == TensorInfo((2,), None)
    assert agrees(ti(None, 3), ti(7, 3))
    assert not agrees(ti(2, 3), ti(2, 4))
    assert not agrees(ti(2, 3), ti(2, 3, dtype=np.int32))
    assert not agrees(ti(2), ti(2, 1))
    assert agrees(TensorInfo(), ti(5))
