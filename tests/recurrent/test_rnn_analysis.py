"""`asyncnet check` / shape inference and `asyncnet draw` on nets with sub-nets (RNN step nets, While, If)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from asyncnet.checker import check_net
from asyncnet.cli import main
from asyncnet.draw import build_drawing, to_dot, to_svg
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.recurrent.build import lstm
from asyncnet.schema import TensorInfo
from asyncnet.serde import make_argument, write_message
from asyncnet.shapes import infer_shapes
from asyncnet.training.gradients import add_gradient_ops

F32 = np.dtype(np.float32)


def rnn_net(gates_rows: int = 32) -> tuple[pb.NetDef, dict[str, TensorInfo]]:
    layer = lstm("x", None, [("h0", "c0"), ("h1", "c1")], 4, [8, 8], "L")
    net = pb.NetDef(name="rnn")
    net.op.extend(layer.ops)
    net.op.append(pb.OperatorDef(type="SumElements", input=[layer.outputs["hidden_all"]], output=["loss"]))
    add_gradient_ops(net, ["loss"])
    infos = {"x": TensorInfo((5, 3, 4), F32)}
    infos.update({s: TensorInfo((1, 3, 8), F32) for s in layer.initial_states})
    infos.update({p: TensorInfo(shape, F32) for p, shape in layer.params.items()})
    infos["L/layer1/gates_w"] = TensorInfo((gates_rows, 8), F32)
    net.external_input.extend(infos)
    return net, infos


def test_shape_inference_goes_into_the_step_net() -> None:
    net, infos = rnn_net()
    shapes = infer_shapes(net, infos)
    assert shapes.blobs["L/layer1/hidden_t_all"] == TensorInfo((5, 3, 8), F32)
    assert shapes.blobs["L/layer0/cell_t_last"] == TensorInfo((1, 3, 8), F32)
    assert shapes.blobs["h1_grad"] == TensorInfo((1, 3, 8), F32)
    report = check_net(net, inputs=infos)
    assert report.ok, [str(i) for i in report.errors]


def test_check_reports_a_broken_step_net_naming_it() -> None:
    net, infos = rnn_net(gates_rows=24)  # layer 1 gates need 4 * 8 rows
    report = check_net(net, inputs=infos)
    assert not report.ok
    text = " ".join(i.message for i in report.errors)
    assert "RecurrentNetwork" in text or "op #1" in text
    assert "L/step_net" in text


def test_while_shapes_join_the_unrun_and_run_body() -> None:
    body = pb.NetDef(name="body")
    body.op.append(pb.OperatorDef(type="Concat", input=["acc", "acc"], output=["doubled", "split"]))
    body.op[0].arg.append(make_argument("axis", 0))
    body.op.append(pb.OperatorDef(type="Copy", input=["doubled"], output=["acc"]))
    loop = pb.OperatorDef(type="While", input=["c", "acc"], output=["acc"])
    loop.arg.append(pb.Argument(name="loop_net", n=body))
    net = pb.NetDef(name="w", op=[loop])
    shapes = infer_shapes(net, {"c": TensorInfo((), np.dtype(np.bool_)), "acc": TensorInfo((2, 3), F32)})
    assert shapes.blobs["acc"].shape == (None, 3)  # 2 rows, or 4, or more: only the columns are known


def test_draw_shows_subnets_as_clusters(tmp_path: Path) -> None:
    net, _ = rnn_net()
    d = build_drawing(net)
    labels = [label for label, _ in d.subnets]
    assert "RecurrentNetwork step_net: net 'L/step_net'" in labels
    assert "RecurrentNetworkGradient backward_step_net: net 'L/backward_step_net'" in labels
    step_ids = d.subnets[labels.index("RecurrentNetwork step_net: net 'L/step_net'")][1]
    assert [n.label for n in d.nodes if n.id in step_ids].count("LSTMUnit") == 2
    dot = to_dot(d)
    assert dot.count("subgraph cluster_subnet") == len(d.subnets) and 'label="RecurrentNetwork step_net' in dot
    assert to_svg(d).count('class="subnet"') == len(d.subnets)
    path = tmp_path / "rnn.pbtxt"
    write_message(net, path)
    assert main(["draw", str(path), "-o", str(tmp_path / "rnn.svg")]) == 0
    assert 'class="subnet"' in (tmp_path / "rnn.svg").read_text()
    assert main(["check", str(path), "--input-shape", "x=5,3,4"]) == 0
