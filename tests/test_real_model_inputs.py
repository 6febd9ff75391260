"""Issue 11 on the real files of ../shared/realnets (skipped without the corpus): every export with an
init-net data placeholder, value_info.json of zoo nets, guessed ResNet-50 dimensions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from asyncnet.cli import main
from asyncnet.commands._common import load_npz, save_npz
from asyncnet.modelinputs import init_placeholders
from asyncnet.serde import read_net
from tests.conftest import realnets_path

# (folder, predict, init, data input, shape to give) for every init+predict pair of the corpus.
PAIRS = {
    "trafficlight": (
        "third_party_caffe2_exports/squeezenet_trafficlight_3class",
        "predict_net.pb",
        "init_net.pb",
        "data",
        (1, 3, 227, 227),
    ),
    "mtcnn": ("third_party_caffe2_exports/mtcnn_pnet_facial_detection", "predict_net.pb", "init_net.pb", "data", (1, 3, 24, 24)),
    "crayon": ("caffe2_model_zoo/style_transfer_crayon", "crayon_predict.pb", "crayon_init.pb", "data_int8_bgra", (1, 128, 128, 4)),
    "lenet": ("third_party_caffe2_exports/pytorch_onnx_lenet_mnist", "predict_net.pb", "init_net.pb", "1", (1, 1, 28, 28)),
    "mask_rcnn_int8": ("caffe2_model_zoo/mask_rcnn_2go/int8_v1_20181212", "model.pb", "model_init.pb", "data", None),
}  # fmt: skip
WITH_PLACEHOLDER = ("trafficlight", "mtcnn", "crayon")


def _paths(key: str) -> tuple[Path, Path]:
    folder, predict, init, _, _ = PAIRS[key]
    return realnets_path(folder, predict), realnets_path(folder, init)


def test_the_placeholder_pattern_is_found_in_exactly_the_exports_that_have_it() -> None:
    root = realnets_path()
    pairs = {p for p in root.rglob("*init*.pb")}
    assert {str(p.relative_to(root)) for p in pairs} == {f"{v[0]}/{v[2]}" for v in PAIRS.values()}
    for key, (_, _, _, data, _) in PAIRS.items():
        predict, init = _paths(key)
        found = init_placeholders(read_net(init), read_net(predict))
        expected = {data: "ConstantFill shape [1]"} if key in WITH_PLACEHOLDER else {}
        assert found == expected, key


@pytest.mark.parametrize("key", WITH_PLACEHOLDER)
def test_given_shape_beats_the_placeholder_in_run_and_check(
    key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    predict, init = _paths(key)
    data, shape = PAIRS[key][3], PAIRS[key][4]
    assert shape is not None
    spec = f"{data}={','.join(map(str, shape))}"
    out = tmp_path / "o.npz"
    assert main(["run", str(predict), "--init", str(init), "--input-shape", spec, "--outputs", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count("placeholder") == 1 and f"'{data}' is a placeholder" in err
    assert all(np.isfinite(np.asarray(v, np.float64)).all() for v in load_npz(out).values())
    assert main(["check", str(predict), "--init", str(init), "--input-shape", spec]) == 0
    assert capsys.readouterr().err.count("placeholder") == 1


@pytest.mark.timeout(120)
def test_trafficlight_exports_to_onnx_and_matches_onnxruntime(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ort = pytest.importorskip("onnxruntime")
    predict, init = _paths("trafficlight")
    model = tmp_path / "m.onnx"
    argv = ["to-onnx", str(predict), "--init", str(init), "--input-shape", "data=1,3,227,227", "-o", str(model)]
    assert main(argv) == 0
    x = np.random.default_rng(0).standard_normal((1, 3, 227, 227)).astype(np.float32)
    save_npz(tmp_path / "in.npz", {"data": x})
    out = tmp_path / "o.npz"
    assert (
        main(["run", str(predict), "--init", str(init), "--inputs", str(tmp_path / "in.npz"), "--outputs", str(out)])
        == 0
    )
    ours = load_npz(out)["prob"]
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    (theirs,) = session.run(["prob"], {"data": x})
    assert ours.shape == (1, 3, 1, 1)
    np.testing.assert_allclose(theirs.reshape(ours.shape), ours, rtol=1e-3, atol=1e-5)
    assert "fed array of shape [1, 3, 227, 227] wins" in capsys.readouterr().err


def test_zoo_value_info_files_name_their_nets_inputs(capsys: pytest.CaptureFixture[str]) -> None:
    zoo = realnets_path("caffe2_model_zoo")
    infos = sorted(zoo.glob("*/value_info.json"))
    assert len(infos) >= 8
    for vi in infos:
        net = next(p for p in vi.parent.iterdir() if p.name.startswith("predict_net"))
        ((name, _),) = json.loads(vi.read_text()).items()
        assert main(["check", str(net)]) == 0, net
        out = capsys.readouterr()
        assert f"input shapes from {vi}" in out.err
        unknown_data = [ln for ln in out.out.splitlines() if "data input(s) of unknown shape" in ln]
        assert all(f" {name};" not in ln and f" {name}," not in ln for ln in unknown_data), (net, unknown_data)
        assert "parameter(s) of unknown shape because their weights are missing" in out.out


@pytest.mark.timeout(120)
def test_resnet50_without_weights_reports_every_guess_and_takes_param_shapes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    net = str(realnets_path("caffe2_model_zoo", "resnet50", "predict_net.pbtxt"))
    out = tmp_path / "o.npz"
    assert main(["run", net, "--random-init", "--outputs", str(out)]) == 0
    err = capsys.readouterr().err
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "guessed 54 parameter dimension(s)" in warnings[0]
    assert "gpu_0/conv1_w: 16 output channels of op #0 Conv (assumed)" in warnings[0]
    assert "gpu_0/pred_w: 16 output channels of op #173 FC (assumed)" in warnings[0]
    assert load_npz(out)["gpu_0/softmax"].shape == (1, 16)
    shapes = tmp_path / "shapes.json"
    shapes.write_text(json.dumps({"gpu_0/pred_w": [1000, 16]}))
    assert main(["run", net, "--random-init", "--param-shapes", str(shapes), "--outputs", str(out)]) == 0
    assert "guessed 53 parameter dimension(s)" in capsys.readouterr().err
    assert load_npz(out)["gpu_0/softmax"].shape == (1, 1000)
