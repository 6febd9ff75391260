"""Input shapes from the files users have (issue 11), on small text fixtures that always run:
init-net placeholders lose to given shapes, value_info.json beside the net, guessed parameter
dimensions reported and suppliable, check's unknown-shape advice, from-caffe's value_info.json."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from asyncnet.cli import main
from asyncnet.commands._common import load_npz
from asyncnet.modelinputs import classify_inputs, drop_init_outputs, init_placeholders, parse_param_shapes
from asyncnet.serde import read_net
from asyncnet.shapes import infer_shapes

# A Caffe2-export-style pair: the init net makes the weights and a `data` placeholder of shape [1].
PREDICT = """
name: "tiny"
external_input: "data" external_input: "conv_w" external_input: "conv_b" external_input: "fc_w" external_input: "fc_b"
external_output: "prob"
op { input: "data" input: "conv_w" input: "conv_b" output: "conv" type: "Conv"
     arg { name: "kernel" i: 3 } arg { name: "pad" i: 1 } }
op { input: "conv" output: "conv" type: "Relu" }
op { input: "conv" input: "fc_w" input: "fc_b" output: "fc" type: "FC" }
op { input: "fc" output: "prob" type: "Softmax" }
"""
INIT = """
name: "tiny_init"
op { output: "conv_w" type: "ConstantFill" arg { name: "shape" ints: 4 ints: 3 ints: 3 ints: 3 }
     arg { name: "value" f: 0.1 } }
op { output: "conv_b" type: "ConstantFill" arg { name: "shape" ints: 4 } arg { name: "value" f: 0.0 } }
op { output: "fc_w" type: "ConstantFill" arg { name: "shape" ints: 5 ints: 256 } arg { name: "value" f: 0.01 } }
op { output: "fc_b" type: "ConstantFill" arg { name: "shape" ints: 5 } arg { name: "value" f: 0.0 } }
op { output: "data" type: "ConstantFill" arg { name: "shape" ints: 1 } }
"""
PROTOTXT = """
name: "TinyCaffe"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc" inner_product_param { num_output: 6 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


@pytest.fixture
def export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "predict_net.pbtxt").write_text(PREDICT)
    (folder / "init_net.pbtxt").write_text(INIT)
    monkeypatch.chdir(tmp_path)
    return folder


@pytest.fixture
def zoo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A model-zoo-style folder: predict net and value_info.json, no weights."""
    folder = tmp_path / "zoo"
    folder.mkdir()
    (folder / "predict_net.pbtxt").write_text(PREDICT.replace("256", "64"))
    (folder / "value_info.json").write_text(json.dumps({"data": [1, [2, 3, 8, 8]]}))
    monkeypatch.chdir(tmp_path)
    return folder


def _pair(folder: Path) -> list[str]:
    return [str(folder / "predict_net.pbtxt"), "--init", str(folder / "init_net.pbtxt")]


def test_placeholder_is_found_and_dropped_and_data_told_from_parameters() -> None:
    from google.protobuf import text_format

    from asyncnet.proto import caffe2_pb2 as pb

    predict, init = text_format.Parse(PREDICT, pb.NetDef()), text_format.Parse(INIT, pb.NetDef())
    assert classify_inputs(predict) == (["data"], ["conv_w", "conv_b", "fc_w", "fc_b"])
    assert init_placeholders(init, predict) == {"data": "ConstantFill shape [1]"}
    assert [o for op in drop_init_outputs(init, ["data"]).op for o in op.output] == ["conv_w", "conv_b", "fc_w", "fc_b"]
    # A real one-element parameter is not a placeholder: only data inputs count.
    assert init_placeholders(init, predict.__class__(op=predict.op[2:])) == {}
    assert parse_param_shapes({"a": [1, 2], "b": [1, [3]]}, source="x") == {"a": (1, 2), "b": (3,)}


def test_given_shape_beats_init_placeholder_in_every_command(
    export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.npz"
    assert main(["run", *_pair(export), "--input-shape", "data=2,3,8,8", "--outputs", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count("placeholder") == 1 and "'data' is a placeholder (ConstantFill shape [1])" in err
    assert "[2, 3, 8, 8] wins" in err
    prob = load_npz(out)["prob"]
    assert prob.shape == (2, 5) and np.allclose(prob, 0.2)  # constant weights: every class equal
    assert main(["check", *_pair(export), "--input-shape", "data=2,3,8,8"]) == 0
    captured = capsys.readouterr()
    assert re.search(r"prob +\(2, 5\) float32", captured.out) and captured.err.count("placeholder") == 1
    assert main(["bench", *_pair(export), "--input-shape", "data=2,3,8,8", "--iters", "1", "-q"]) == 0
    assert capsys.readouterr().err.count("placeholder") == 1
    assert main(["draw", *_pair(export), "--input-shape", "data=2,3,8,8", "-o", str(tmp_path / "n.dot")]) == 0
    assert "(2, 5)" in (tmp_path / "n.dot").read_text()
    onnx = pytest.importorskip("onnx")
    model_path = tmp_path / "m.onnx"
    assert main(["to-onnx", *_pair(export), "--input-shape", "data=2,3,8,8", "-o", str(model_path)]) == 0
    graph = onnx.load(str(model_path)).graph
    assert [i.name for i in graph.input] == ["data"] and "data" not in {t.name for t in graph.initializer}
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [2, 3, 8, 8]


def test_placeholder_without_a_shape_says_how_to_give_it(export: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", *_pair(export)]) == 1
    err = capsys.readouterr().err
    assert "'data' looks like a placeholder (ConstantFill shape [1])" in err and "--input-shape data=" in err


def test_value_info_beside_the_net_is_picked_up_and_explicit_shapes_win(
    zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    net = str(zoo / "predict_net.pbtxt")
    out = tmp_path / "o.npz"
    assert main(["run", net, "--random-init", "--outputs", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"input shapes from {zoo / 'value_info.json'}" in err
    assert load_npz(out)["prob"].shape[0] == 2
    assert main(["run", net, "--random-init", "--input-shape", "data=3,3,8,8", "--outputs", str(out)]) == 0
    assert load_npz(out)["prob"].shape[0] == 3
    capsys.readouterr()
    assert main(["check", net]) == 0
    text = capsys.readouterr().out
    assert re.search(r"data +\(2, 3, 8, 8\) float32", text)
    other = tmp_path / "vi.json"
    other.write_text(json.dumps({"data": [1, [1, 3, 4, 4]]}))
    assert main(["check", net, "--value-info", str(other)]) == 0
    assert re.search(r"data +\(1, 3, 4, 4\) float32", capsys.readouterr().out)
    assert main(["bench", net, "--random-init", "--iters", "1", "-q"]) == 0
    assert main(["draw", net, "-o", str(tmp_path / "z.dot")]) == 0
    assert "value_info.json" in capsys.readouterr().err
    other.write_text(json.dumps({"nope": [1, [1]]}))
    assert main(["run", net, "--value-info", str(other)]) == 1
    assert f"{other} names ['nope'], which are not inputs" in capsys.readouterr().err


def test_guessed_dimensions_are_reported_in_one_line_and_can_be_supplied(
    zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    net = str(zoo / "predict_net.pbtxt")
    out = tmp_path / "o.npz"
    assert main(["run", net, "--random-init", "--outputs", str(out)]) == 0
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1
    assert "guessed 2 parameter dimension(s)" in warnings[0]
    assert "conv_w: 16 output channels of op #0 Conv (assumed)" in warnings[0]
    assert "fc_w: 16 output channels of op #2 FC (assumed)" in warnings[0] and "--param-shape" in warnings[0]
    assert load_npz(out)["prob"].shape == (2, 16)
    given = ["--param-shape", "conv_w=4,3,3,3", "--param-shape", "fc_w=7,256"]
    assert main(["run", net, "--random-init", *given, "--outputs", str(out)]) == 0
    assert "warning" not in capsys.readouterr().err
    assert load_npz(out)["prob"].shape == (2, 7)
    shapes = tmp_path / "params.json"
    shapes.write_text(json.dumps({"conv_w": [4, 3, 3, 3], "fc_w": [1, [7, 256]]}))
    assert main(["run", net, "--random-init", "--param-shapes", str(shapes), "--outputs", str(out)]) == 0
    assert load_npz(out)["prob"].shape == (2, 7) and "warning" not in capsys.readouterr().err
    # Only one given: the other is still reported.
    assert main(["run", net, "--random-init", "--param-shape", "conv_w=4,3,3,3"]) == 0
    assert "guessed 1 parameter dimension(s) that no weights fix: fc_w:" in capsys.readouterr().err
    assert main(["run", net, "--random-init", "--param-shape", "nope=1"]) == 1
    assert "--param-shape names ['nope']" in capsys.readouterr().err


def test_check_says_which_shapes_are_unknown_because_weights_are_missing(
    zoo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    net = str(zoo / "predict_net.pbtxt")
    assert main(["check", net]) == 0
    text = capsys.readouterr().out
    assert "4 parameter(s) of unknown shape because their weights are missing (no --init INIT_NET)" in text
    assert "conv_w, conv_b, fc_w, fc_b" in text and "--param-shape NAME=D0,D1,..." in text
    assert "data input(s) of unknown shape" not in text
    (zoo / "value_info.json").unlink()
    assert main(["check", net]) == 0
    assert "1 data input(s) of unknown shape: data; give --input-shape" in capsys.readouterr().out
    given = ["--param-shape", "conv_w=4,3,3,3", "--param-shape", "conv_b=4", "--param-shape", "fc_w=5,256"]
    assert main(["check", net, "--input-shape", "data=2,3,8,8", *given, "--param-shape", "fc_b=5"]) == 0
    text = capsys.readouterr().out
    assert "unknown shape" not in text and re.search(r"prob +\(2, 5\) float32", text)


def test_from_caffe_writes_value_info_beside_the_predict_net(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "deploy.prototxt").write_text(PROTOTXT)
    (tmp_path / "model").mkdir()
    predict, init = tmp_path / "model" / "predict_net.pb", tmp_path / "model" / "init_net.pb"
    assert main(["from-caffe", "deploy.prototxt", "-o", str(predict), "--init", str(init)]) == 0
    assert "wrote " + str(tmp_path / "model" / "value_info.json") in capsys.readouterr().out
    assert json.loads((tmp_path / "model" / "value_info.json").read_text()) == {"data": [1, [2, 3, 8, 8]]}
    out = tmp_path / "o.npz"
    assert main(["run", str(predict), "--init", str(init), "--outputs", str(out)]) == 0
    assert load_npz(out)["prob"].shape == (2, 6)
    shapes = infer_shapes(read_net(predict), {})
    assert shapes.get("prob").shape is None  # the shape really comes from value_info.json
    assert main(["from-caffe", "deploy.prototxt", "-o", "p2.pb", "--init", "i2.pb", "--no-value-info"]) == 0
    assert not (tmp_path / "value_info.json").exists()


def test_random_init_without_any_data_shape_names_the_data_input(zoo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (zoo / "value_info.json").unlink()
    assert main(["run", str(zoo / "predict_net.pbtxt"), "--random-init"]) == 1
    err = capsys.readouterr().err
    assert "data input(s) data have no shape; give --input-shape data=D0,D1,... or --value-info FILE" in err
    assert len(err.splitlines()) == 1


def test_value_info_found_beside_the_net_may_name_other_blobs(zoo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (zoo / "value_info.json").write_text(json.dumps({"data": [1, [2, 3, 8, 8]], "other": [1, [1]]}))
    assert main(["run", str(zoo / "predict_net.pbtxt"), "--random-init"]) == 0
    assert "ignoring ['other']" in capsys.readouterr().err
    assert (
        main(["run", str(zoo / "predict_net.pbtxt"), "--random-init", "--value-info", str(zoo / "value_info.json")])
        == 1
    )
    assert "names ['other'], which are not inputs" in capsys.readouterr().err


def test_to_onnx_takes_value_info_beside_the_net_over_the_placeholder(
    export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    onnx = pytest.importorskip("onnx")
    (export / "value_info.json").write_text(json.dumps({"data": [1, [3, 3, 8, 8]]}))
    model_path = tmp_path / "m.onnx"
    assert main(["to-onnx", *_pair(export), "-o", str(model_path)]) == 0
    err = capsys.readouterr().err
    assert "value_info.json" in err and err.count("placeholder") == 1
    graph = onnx.load(str(model_path)).graph
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [3, 3, 8, 8]
