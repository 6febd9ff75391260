"""Caffe2 model-zoo nets end to end: random (or real) init, finite outputs, shapes as inferred."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from asyncnet.cli import main
from asyncnet.commands._common import load_npz
from asyncnet.net import net_inputs
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.qtensor import Int8Tensor
from asyncnet.randinit import fill_workspace
from asyncnet.schema import TensorInfo
from asyncnet.serde import read_net
from asyncnet.shapes import agrees, infer_shapes, info_of
from asyncnet.workspace import Workspace
from tests.conftest import realnets_path

ZOO = ("caffe2_model_zoo",)

# name -> (predict net, init net or None, data blob, input shape). Sizes are small to keep
# the file fast; nets ending in a fixed 7x7 pool need 224.
NETS: dict[str, tuple[str, str | None, str, tuple[int, ...]]] = {
    "alexnet": ("bvlc_alexnet/predict_net.pbtxt", None, "data", (1, 3, 128, 128)),
    "vgg19": ("vgg19/predict_net.pbtxt", None, "data", (1, 3, 64, 64)),
    "zfnet512": ("zfnet512/predict_net.pbtxt", None, "gpu_0/data", (1, 3, 96, 96)),
    "googlenet": ("inception_v1/predict_net.pbtxt", None, "data", (1, 3, 224, 224)),
    "bn_inception": ("inception_v2/predict_net.pbtxt", None, "data", (1, 3, 224, 224)),
    "resnet50": ("resnet50/predict_net.pbtxt", None, "gpu_0/data", (1, 3, 224, 224)),
    "densenet121": ("densenet121/predict_net.pbtxt", None, "data", (1, 3, 64, 64)),
    "squeezenet": ("squeezenet/predict_net.pb", None, "data", (1, 3, 64, 64)),
    "faster_rcnn": ("detectron_e2e_faster_rcnn_R-50-C4_1x/predict_net.pbtxt", None, "data", (1, 3, 128, 128)),
    "mask_rcnn_fp32_v1": ("mask_rcnn_2go/fp32_v1_20181212/model.pb", None, "data", (1, 3, 128, 128)),
    "mask_rcnn_fp32_v2": ("mask_rcnn_2go/fp32_v2_20190124/model.pbtxt", None, "data", (1, 3, 128, 128)),
    "mask_rcnn_int8_v1": (
        "mask_rcnn_2go/int8_v1_20181212/model.pb",
        "mask_rcnn_2go/int8_v1_20181212/model_init.pb",
        "data",
        (1, 3, 128, 128),
    ),
    "mask_rcnn_int8_v2": ("mask_rcnn_2go/int8_v2_20190124/model.pbtxt", None, "data", (1, 3, 128, 128)),
    "mask_rcnn_int8_v3_if": ("mask_rcnn_2go/int8_v3_20190221_if_op/model.pbtxt", None, "data", (1, 3, 128, 128)),
}


def _value_info(value: Any) -> TensorInfo:
    return info_of(value)


def _check_finite(name: str, value: Any) -> None:
    arr = value.data if isinstance(value, Int8Tensor) else np.asarray(value)
    if arr.dtype.kind == "f":
        assert np.isfinite(arr).all(), f"blob '{name}' has non-finite values"


def _all_ops(net: pb.NetDef) -> list[pb.OperatorDef]:
    """Ops of ``net`` and of the nets nested in their arguments (If branches)."""
    out: list[pb.OperatorDef] = []
    for op in net.op:
        out.append(op)
        for a in op.arg:
            if a.HasField("n"):
                out.extend(_all_ops(a.n))
    return out


def _run_and_compare(
    rel: str,
    init_rel: str | None,
    data: str,
    shape: tuple[int, ...],
    seed: int = 0,
    feeds: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    net_def = read_net(realnets_path(*ZOO, rel))
    init_def = read_net(realnets_path(*ZOO, init_rel)) if init_rel else None
    with Workspace() as ws:
        if init_def is not None:
            ws.run_net_once(init_def)
        for name, value in (feeds or {}).items():
            ws.feed(name, value)
        fill_workspace(net_def, ws, {data: shape} if data else {}, params=True, seed=seed)
        before = {n: _value_info(ws.fetch(n)) for n in ws.blobs()}
        inferred = infer_shapes(net_def, before)
        net = ws.create_net(net_def, executor="simple")
        net.run()
        outputs = {n: ws.fetch(n) for n in net_def.external_output}
        # Every blob the net wrote must agree with what inference predicted for it.
        written = {o for op in _all_ops(net_def) for o in op.output}
        disagree = []
        for name in sorted(written):
            if not ws.has(name):
                continue
            actual = _value_info(ws.fetch(name))
            if not agrees(inferred.get(name), actual):
                disagree.append(f"{name}: inferred {inferred.get(name)}, actual {actual}")
        assert not disagree, "shape inference disagrees with the run:\n" + "\n".join(disagree[:20])
        for name in net_def.external_output:
            _check_finite(name, outputs[name])
    return outputs


@pytest.mark.timeout(240)
@pytest.mark.parametrize("key", sorted(NETS))
def test_zoo_net_runs_with_random_init_and_shapes_agree(key: str) -> None:
    rel, init_rel, data, shape = NETS[key]
    outputs = _run_and_compare(rel, init_rel, data, shape)
    assert outputs
    for name, value in outputs.items():
        arr = value.data if isinstance(value, Int8Tensor) else np.asarray(value)
        assert arr.ndim >= 1, name
    if "bbox_nms" in outputs:
        n_det = len(outputs["bbox_nms"])
        assert outputs["score_nms"].shape == outputs["class_nms"].shape == (n_det,)
        if "mask_fcn_probs" in outputs and n_det and "int8_v1" not in key:
            # The mask head (an If branch in the newer nets) ran once per detection.
            masks = np.asarray(outputs["mask_fcn_probs"])
            assert masks.ndim == 4 and masks.shape[0] == n_det


@pytest.mark.timeout(120)
def test_classifier_probabilities_sum_to_one() -> None:
    out = _run_and_compare(*NETS["alexnet"])
    prob = np.asarray(out["prob"])
    assert prob.shape == (1, 16)
    np.testing.assert_allclose(prob.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.timeout(120)
def test_faster_rcnn_detections_are_well_formed() -> None:
    out = _run_and_compare(*NETS["faster_rcnn"])
    scores, boxes, classes = (np.asarray(out[k]) for k in ("score_nms", "bbox_nms", "class_nms"))
    assert boxes.shape == (scores.shape[0], 4) and classes.shape == scores.shape
    assert scores.shape[0] <= 100  # detections_per_im
    # Zero-size boxes come out as x2 = x1 - 1 (legacy +1 widths).
    assert (boxes[:, 2] >= boxes[:, 0] - 1).all() and (boxes[:, 3] >= boxes[:, 1] - 1).all()
    assert boxes.min(initial=0) >= 0 and boxes.max(initial=0) <= 127
    assert ((classes >= 1) & (classes < 5)).all()


@pytest.mark.timeout(120)
def test_style_transfer_with_real_init_net(tmp_path: Path) -> None:
    predict = realnets_path(*ZOO, "style_transfer_crayon", "crayon_predict.pb")
    init = realnets_path(*ZOO, "style_transfer_crayon", "crayon_init.pb")
    img = np.random.default_rng(0).integers(0, 256, (1, 64, 56, 4)).astype(np.uint8)
    np.savez(tmp_path / "in.npz", data_int8_bgra=img)
    rc = main(["run", str(predict), "--init", str(init), "--inputs", str(tmp_path / "in.npz"),
               "--outputs", str(tmp_path / "out.npz")])  # fmt: skip
    assert rc == 0
    out = load_npz(tmp_path / "out.npz")["styled_int8_bgra"]
    assert out.shape == (1, 64, 56, 4) and out.dtype == np.uint8
    assert (out[..., 3] == 255).all()
    assert out[..., :3].std() > 1.0  # a real image, not a constant
    # The same run in process, checking every blob against shape inference.
    again = _run_and_compare(
        "style_transfer_crayon/crayon_predict.pb",
        "style_transfer_crayon/crayon_init.pb",
        "",
        (),
        feeds={"data_int8_bgra": img},
    )
    np.testing.assert_array_equal(again["styled_int8_bgra"], out)


@pytest.mark.timeout(120)
def test_cli_random_init_is_seeded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net = realnets_path(*ZOO, "squeezenet", "predict_net.pb")
    outs = []
    for seed, name in ((3, "a"), (3, "b"), (4, "c")):
        path = tmp_path / f"{name}.npz"
        rc = main(["run", str(net), "--input-shape", "data=1,3,64,64", "--random-init", "--seed", str(seed),
                   "--outputs", str(path)])  # fmt: skip
        assert rc == 0
        outs.append(load_npz(path))
    (key,) = outs[0]
    assert np.isfinite(outs[0][key]).all()
    np.testing.assert_array_equal(outs[0][key], outs[1][key])
    assert not np.array_equal(outs[0][key], outs[2][key])
    assert "ran net" in capsys.readouterr().out


def test_every_zoo_predict_net_is_covered() -> None:
    root = realnets_path(*ZOO)
    covered = {v[0] for v in NETS.values()} | {"style_transfer_crayon/crayon_predict.pb"}
    found = {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.suffix in (".pb", ".pbtxt") and "init" not in p.name and "value_info" not in p.name
    }
    assert found <= covered, f"zoo nets without an end-to-end test: {sorted(found - covered)}"
    for rel in covered:
        assert net_inputs(read_net(root / rel))


@pytest.mark.timeout(180)
def test_int8_mask_rcnn_real_weights_keep_activations_in_range() -> None:
    """With the real quantized weights, every int8 activation stays inside its quantized range.

    The stored Y_scale / Y_zero_point of each op were calibrated on real images: a wrong
    filter layout or requantization would saturate many values at 0 or 255.
    """
    predict = read_net(realnets_path(*ZOO, "mask_rcnn_2go", "int8_v1_20181212", "model.pb"))
    init = read_net(realnets_path(*ZOO, "mask_rcnn_2go", "int8_v1_20181212", "model_init.pb"))
    y, x = np.mgrid[0:96, 0:96]
    img = np.stack([127 + 100 * np.sin(x / 9.0), 127 + 100 * np.cos(y / 13.0), 127 + 80 * np.sin((x + y) / 17.0)])
    with Workspace() as ws:
        ws.run_net_once(init)
        ws.feed("data", img[None].astype(np.float32))
        ws.feed("im_info", np.array([[96, 96, 1.0]], np.float32))
        fill_workspace(predict, ws, {}, params=True)  # only the anchors are missing
        net = ws.create_net(predict, executor="simple")
        checked = 0
        for op in net.ops:
            op.run()
            for cell in op.outputs:
                v = cell.value
                if isinstance(v, Int8Tensor) and v.data.dtype == np.uint8 and v.size and op.info.type != "Int8Softmax":
                    assert np.mean(v.data == 255) < 0.05, f"{op.info.label()} saturates at 255"
                    if v.zero_point > 0:
                        assert np.mean(v.data == 0) < 0.05, f"{op.info.label()} saturates at 0"
                    checked += 1
        probs = ws.fetch("rpn_roi_probs")
    assert checked > 50
    assert len(probs) > 0 and np.isfinite(probs).all()
