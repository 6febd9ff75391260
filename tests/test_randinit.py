"""Random init of unfed inputs: parameter shapes from usage, value scales, seeding, CLI flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from asyncnet.cli import main
from asyncnet.commands._common import load_npz
from asyncnet.errors import NetDefinitionError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.qtensor import Int8Tensor
from asyncnet.randinit import channel_demands, fill_workspace, plan_random_init, random_init
from asyncnet.schema import TensorInfo
from asyncnet.serde import make_argument, write_message
from asyncnet.workspace import Workspace
from tests.conftest import ROOT

F32 = np.dtype(np.float32)


def op(op_type: str, inputs: list[str], outputs: list[str], **args: Any) -> pb.OperatorDef:
    o = pb.OperatorDef(type=op_type, input=inputs, output=outputs)
    for k, v in args.items():
        o.arg.append(make_argument(k, v))
    return o


def net(*ops: pb.OperatorDef, external_output: tuple[str, ...] = ()) -> pb.NetDef:
    n = pb.NetDef(name="t")
    n.op.extend(ops)
    n.external_output.extend(external_output)
    return n


def ti(*shape: int) -> TensorInfo:
    return TensorInfo(tuple(shape), F32)


CNN = net(
    op("Conv", ["data", "c1_w", "c1_b"], ["c1"], kernel=3, pad=1, stride=2),
    op("SpatialBN", ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], ["c1"], is_test=1),
    op("Relu", ["c1"], ["c1"]),
    op("Conv", ["c1", "dw_w"], ["dw"], kernel=3, pad=1, group=8),
    op("Mul", ["dw", "sc"], ["dw2"], broadcast=1, axis=1),
    op("Add", ["dw2", "sh"], ["dw3"], broadcast=1, axis=1),
    op("FC", ["dw3", "fc_w", "fc_b"], ["fc"]),
    op("Softmax", ["fc"], ["prob"]),
    external_output=("prob",),
)


def test_parameter_shapes_follow_from_usage() -> None:
    plan = plan_random_init(CNN, {"data": ti(2, 3, 16, 16)}, width=6)
    s = {k: v.info.shape for k, v in plan.specs.items()}
    # The depthwise conv (group 8) fixes the first conv's output channels.
    assert s["c1_w"] == (8, 3, 3, 3) and s["c1_b"] == (8,)
    assert s["bn_s"] == s["bn_b"] == s["bn_m"] == s["bn_v"] == (8,)
    assert s["dw_w"] == (8, 1, 3, 3)
    assert s["sc"] == s["sh"] == (8,)
    assert s["fc_w"] == (6, 8 * 8 * 8) and s["fc_b"] == (6,)
    assert plan.specs["bn_v"].kind == "variance" and plan.specs["c1_w"].fan_in == 27
    assert plan.shapes.blobs["prob"] == ti(2, 6)


def test_values_are_seeded_and_scaled() -> None:
    a = random_init(CNN, {}, {"data": ti(2, 3, 16, 16)}, seed=5)
    b = random_init(CNN, {}, {"data": ti(2, 3, 16, 16)}, seed=5)
    c = random_init(CNN, {}, {"data": ti(2, 3, 16, 16)}, seed=6)
    assert set(a) == {"data", "c1_w", "c1_b", "bn_s", "bn_b", "bn_m", "bn_v", "dw_w", "sc", "sh", "fc_w", "fc_b"}
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        assert a[k].dtype == np.float32
    assert not np.array_equal(a["c1_w"], c["c1_w"])
    assert (a["bn_v"] > 0).all()
    assert abs(a["bn_s"].mean() - 1.0) < 0.25 and abs(a["fc_b"]).max() < 0.1
    # He scaling: std close to sqrt(2 / fan_in).
    w = a["fc_w"]
    assert 0.5 < w.std() / np.sqrt(2.0 / w.shape[1]) < 1.5


def test_random_net_runs_with_finite_outputs() -> None:
    with Workspace() as ws:
        fed = fill_workspace(CNN, ws, {"data": (2, 3, 16, 16)}, params=True, seed=0)
        assert "data" in fed and "fc_w" in fed
        ws.run_net_once(CNN)
        prob = ws.fetch("prob")
    assert prob.shape == (2, 16) and np.isfinite(prob).all()
    np.testing.assert_allclose(prob.sum(1), 1.0, rtol=1e-5)


def test_known_blobs_are_not_generated_and_int_inputs_are_zero() -> None:
    conv = net(op("Conv", ["data", "c1_w", "c1_b"], ["c1"], kernel=3))
    known = {"c1_w": TensorInfo((4, 3, 3, 3), F32)}
    plan = plan_random_init(conv, {"data": ti(1, 3, 8, 8), **known})
    assert "c1_w" not in plan.specs
    # The known weight (4 outputs) wins over the width when sizing the bias.
    assert plan.specs["c1_b"].info.shape == (4,)
    n = net(op("Add", ["x", "k"], ["y"]))
    vals = random_init(n, {}, {"x": TensorInfo((3,), np.dtype(np.int32))})
    assert vals["k"].dtype == np.int32 and (vals["k"] == 0).all() and (vals["x"] == 0).all()


def test_fc_axis_w_from_old_caffe_blobs() -> None:
    n = net(op("FC", ["x", "w", "b"], ["y"], axis_w=3))
    plan = plan_random_init(n, {"x": ti(2, 5, 1, 1)}, width=4)
    assert plan.specs["w"].info.shape == (1, 1, 4, 5)


def test_detection_heads_get_consistent_channel_counts() -> None:
    n = net(
        op("Conv", ["feat", "cls_w", "cls_b"], ["logits"], kernel=1),
        op("Sigmoid", ["logits"], ["probs"]),
        op("Conv", ["feat", "box_w", "box_b"], ["deltas"], kernel=1),
        op("GenerateProposals", ["probs", "deltas", "im_info", "anchors"], ["rois", "roi_probs"], spatial_scale=0.25),
    )
    d = channel_demands(n, num_anchors=15, num_classes=5)
    assert d["probs"] == 15 and d["logits"] == 15 and d["deltas"] == 60
    with Workspace() as ws:
        fill_workspace(n, ws, {"feat": (1, 4, 6, 8)}, params=True, seed=1)
        assert ws.fetch("anchors").shape == (15, 4)
        np.testing.assert_array_equal(ws.fetch("im_info"), [[24.0, 32.0, 1.0]])
        ws.run_net_once(n)
        rois = ws.fetch("rois")
    assert rois.ndim == 2 and rois.shape[1] == 5 and len(rois) > 0


def test_int8_parameters_are_quantized_tensors() -> None:
    n = net(
        op("Int8Quantize", ["x"], ["xq"], Y_scale=0.05, Y_zero_point=128),
        op("Int8Conv", ["xq", "w", "b"], ["y"], kernel=3, pad=1, Y_scale=0.1, Y_zero_point=128),
    )
    vals = random_init(n, {}, {"x": ti(1, 5, 5, 3)}, seed=0, width=4)
    w, b = vals["w"], vals["b"]
    assert isinstance(w, Int8Tensor) and w.shape == (4, 3, 3, 3) and w.dtype == np.uint8
    assert isinstance(b, Int8Tensor) and b.shape == (4,) and b.dtype == np.int32


def test_unresolvable_input_is_named() -> None:
    n = net(op("Relu", ["x"], ["y"]), op("Concat", ["y", "mystery"], ["z", "split"]))
    with pytest.raises(NetDefinitionError, match=r"'mystery': op #1 Concat reads it"):
        plan_random_init(n, {"x": ti(2, 2)})
    with pytest.raises(NetDefinitionError, match=r"'w'.*data flowing in is unknown"):
        plan_random_init(net(op("FC", ["x", "w", "b"], ["y"])), {})


def test_declared_but_unread_external_input_gets_a_placeholder() -> None:
    n = net(op("Relu", ["x"], ["y"]))
    n.external_input.extend(["x", "queue"])
    vals = random_init(n, {}, {"x": ti(2)})
    assert vals["queue"].shape == (0,)


def test_cli_input_shape_and_random_init(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cnn.pbtxt"
    write_message(CNN, path)
    out = tmp_path / "out.npz"
    rc = main(
        ["run", str(path), "--input-shape", "data=1,3,8,8", "--random-init", "--seed", "2", "--outputs", str(out)]
    )
    assert rc == 0
    prob = load_npz(out)["prob"]
    assert prob.shape == (1, 16) and np.isfinite(prob).all()
    assert "prob: shape (1, 16)" in capsys.readouterr().out


def test_cli_input_shape_alone_feeds_data_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    predict = ROOT / "nets" / "mlp_predict.pbtxt"
    init = ROOT / "nets" / "mlp_init.pbtxt"
    assert main(["run", str(predict), "--init", str(init), "--input-shape", "data=3,4"]) == 0
    capsys.readouterr()
    # Without --random-init the parameters stay missing.
    assert main(["run", str(predict), "--input-shape", "data=3,4"]) == 1
    assert "fc1_w" in capsys.readouterr().err


def test_cli_rejects_shapes_for_non_inputs(capsys: pytest.CaptureFixture[str]) -> None:
    predict = ROOT / "nets" / "mlp_predict.pbtxt"
    assert main(["run", str(predict), "--input-shape", "nope=1,2", "--random-init"]) == 1
    err = capsys.readouterr().err
    assert "'nope'" in err and "data" in err
