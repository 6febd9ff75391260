"""The static checker: broken nets are flagged at the right op; zoo-net shapes match real runs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import realnets_path

from asyncnet.checker import check_net
from asyncnet.cli import main
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.schema import TensorInfo
from asyncnet.serde import make_argument, read_net, write_message
from asyncnet.shapes import agrees, info_of, infos_of, read_value_info
from asyncnet.workspace import Workspace

ROOT = Path(__file__).resolve().parents[2]
F32 = np.dtype(np.float32)


def _op(t: str, ins: list[str], outs: list[str], **args: Any) -> pb.OperatorDef:
    return pb.OperatorDef(type=t, input=ins, output=outs, arg=[make_argument(k, v) for k, v in args.items()])


def _net(*ops: pb.OperatorDef, ext_in: tuple[str, ...] = ("x",), ext_out: tuple[str, ...] = ()) -> pb.NetDef:
    net = pb.NetDef(name="broken")
    net.op.extend(ops)
    net.external_input.extend(ext_in)
    net.external_output.extend(ext_out)
    return net


X = {"x": TensorInfo((2, 3), F32)}

BROKEN = {
    "unknown op": (
        _net(_op("Relu", ["x"], ["a"]), _op("Reluu", ["a"], ["b"]), ext_out=("b",)),
        "unknown-op",
        1,
        "Reluu",
    ),
    "arity": (_net(_op("Relu", ["x"], ["a"]), _op("Relu", ["x", "a"], ["b"]), ext_out=("b",)), "schema", 1, "Relu"),
    "in-place": (
        _net(_op("Relu", ["x"], ["a"]), _op("FC", ["a", "w", "b"], ["w"]), ext_in=("x", "w", "b"), ext_out=("w",)),
        "schema",
        1,
        "FC",
    ),
    "undefined blob": (
        _net(_op("Relu", ["x"], ["a"]), _op("Add", ["a", "ghost"], ["c"]), ext_out=("c",)),
        "undefined-blob",
        1,
        "Add",
    ),
    "read before write": (
        _net(_op("Relu", ["later"], ["a"]), _op("Relu", ["x"], ["later"]), ext_out=("a",)),
        "undefined-blob",
        0,
        "Relu",
    ),
    "bad argument": (_net(_op("Softmax", ["x"], ["s"], axis="one"), ext_out=("s",)), "arguments", 0, "Softmax"),
    "shape mismatch": (
        _net(
            _op("ConstantFill", [], ["w"], shape=[4, 5], value=1.0),
            _op("ConstantFill", [], ["b"], shape=[4], value=0.0),
            _op("Relu", ["x"], ["r"]),
            _op("FC", ["r", "w", "b"], ["y"]),
            ext_out=("y",),
        ),
        "shape",
        3,
        "FC",
    ),
    "broadcast mismatch": (
        _net(
            _op("ConstantFill", [], ["k"], shape=[4], value=1.0),
            _op("Mul", ["x", "k"], ["y"], broadcast=1),
            ext_out=("y",),
        ),
        "shape",
        1,
        "Mul",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_net_is_flagged_at_the_right_op(case: str) -> None:
    net, code, index, op_type = BROKEN[case]
    report = check_net(net, inputs=X)
    assert not report.ok
    first = report.errors[0]
    assert (first.code, first.op_index, first.op_type) == (code, index, op_type), report.lines()
    assert f"op #{index} {op_type}" in first.message


def test_unproduced_external_output_is_an_error() -> None:
    report = check_net(_net(_op("Relu", ["x"], ["a"]), ext_out=("a", "nope")), inputs=X)
    assert [(i.code, i.blob) for i in report.errors] == [("unproduced-output", "nope")]


def test_unused_outputs_are_warnings_and_shapes_are_printed() -> None:
    net = _net(
        _op("Relu", ["x"], ["dead"]),
        _op("Sigmoid", ["x"], ["overwritten"]),
        _op("Tanh", ["x"], ["overwritten"]),
        _op("Relu", ["overwritten"], ["y"]),
        ext_out=("y",),
    )
    report = check_net(net, inputs=X)
    assert report.ok
    assert [(w.code, w.op_index) for w in report.warnings] == [("unused-output", 0), ("unused-output", 1)]
    assert report.shapes["y"] == TensorInfo((2, 3), F32)
    text = "\n".join(report.lines())
    assert re.search(r"^ +y +\(2, 3\) float32$", text, re.M)
    assert "cpu:0: 4 op(s)" in text


def test_device_summary_counts_ops_per_device() -> None:
    net = _net(_op("Relu", ["x"], ["a"]), _op("Relu", ["a"], ["b"]), ext_out=("b",))
    net.op[1].device_option.device_type = 1
    net.op[1].device_option.device_id = 2
    net.op[1].engine = "CUDNN"
    report = check_net(net, inputs=X)
    assert {d: s.ops for d, s in report.devices.items()} == {"cpu:0": 1, "cuda:2": 1}
    assert report.devices["cuda:2"].engines["CUDNN"] == 1


def test_nested_net_errors_name_the_outer_op() -> None:
    then_net = pb.NetDef(name="then")
    then_net.op.extend([_op("NoSuchOp", ["x"], ["y"])])
    if_op = _op("If", ["cond", "x"], ["y"])
    if_op.arg.add(name="then_net").n.CopyFrom(then_net)
    net = _net(if_op, ext_in=("cond", "x"), ext_out=("y",))
    report = check_net(net, inputs={**X, "cond": TensorInfo((), np.dtype(np.bool_))})
    assert [(e.code, e.op_index) for e in report.errors] == [("unknown-op", 0)], report.lines()
    assert "op #0 If then_net net 'then': op #0 NoSuchOp" in report.errors[0].message


def test_cli_exit_status_and_shapes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(ROOT / "nets/mlp_predict.pbtxt"), "--init", str(ROOT / "nets/mlp_init.pbtxt")]) == 0
    out = capsys.readouterr().out
    assert "0 error(s)" in out and "inferred shapes:" in out
    broken = tmp_path / "broken.pbtxt"
    write_message(BROKEN["shape mismatch"][0], broken)
    assert main(["check", str(broken), "--input-shape", "x=2,3"]) == 1
    out = capsys.readouterr().out
    assert "op #3 FC" in out


def test_init_net_shapes_match_a_real_run() -> None:
    init = read_net(ROOT / "nets/mlp_init.pbtxt")
    predict = read_net(ROOT / "nets/mlp_predict.pbtxt")
    ws = Workspace()
    ws.run_net_once(init)
    data = np.load(ROOT / "nets/mlp_input.npz")
    for k in data.files:
        ws.feed(k, data[k])
    report = check_net(predict, init_net=init, inputs={k: info_of(data[k]) for k in data.files})
    assert report.ok, report.lines()
    ws.run_net_once(predict)
    for name in ws.blobs():
        assert report.shapes[name] == info_of(ws.fetch(name)), name


ZOO = [
    "bvlc_alexnet",
    "densenet121",
    "detectron_e2e_faster_rcnn_R-50-C4_1x",
    "inception_v1",
    "inception_v2",
    "resnet50",
    "squeezenet",
    "vgg19",
    "zfnet512",
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("model", ZOO)
def test_zoo_net_shapes_match_an_actual_run(model: str) -> None:
    from asyncnet.randinit import random_init

    folder = realnets_path("caffe2_model_zoo", model)
    net = read_net(next(p for p in sorted(folder.iterdir()) if p.name.startswith("predict_net")))
    data = read_value_info(folder / "value_info.json")
    # Parameters are not in the corpus: give them seeded random values of derived shapes.
    values = random_init(net, {}, data, seed=0, width=8)
    report = check_net(net, inputs=infos_of(values))
    assert report.ok, report.lines()
    ws = Workspace()
    for k, v in values.items():
        ws.feed(k, v)
    ws.run_net_once(net)
    compared = 0
    for name, inferred in report.shapes.items():
        if ws.has(name):
            assert agrees(inferred, info_of(ws.fetch(name))), (name, str(inferred), str(info_of(ws.fetch(name))))
            compared += 1
    assert compared >= len(net.op) // 2
    if model != "detectron_e2e_faster_rcnn_R-50-C4_1x":
        # Every classification net ends in one row of class scores for its single image.
        out = report.shapes[net.external_output[0]]
        assert out.known and out.shape is not None and out.shape[:2] == (1, 8), str(out)
    else:
        assert str(report.shapes["bbox_nms"]) == "(?, 4) float32"


def test_zoo_cli_prints_input_shape(capsys: pytest.CaptureFixture[str]) -> None:
    folder = realnets_path("caffe2_model_zoo", "squeezenet")
    status = main(["check", str(folder / "predict_net.pb"), "--input-shape", "data=1,3,224,224"])
    out = capsys.readouterr().out
    assert status == 0
    assert "data" in out and "(1, 3, 224, 224) float32" in out
