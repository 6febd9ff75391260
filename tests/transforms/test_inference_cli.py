"""``asyncnet optimize`` and the inference options of ``asyncnet run`` / ``asyncnet bench``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from asyncnet.cli import main
from asyncnet.commands._common import load_npz
from asyncnet.serde import read_net
from tests.conftest import ROOT

NETS = ROOT / "nets"
MLP = str(NETS / "mlp_predict.pbtxt")
INIT = str(NETS / "mlp_init.pbtxt")
DATA = str(NETS / "mlp_input.npz")


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 0
    return capsys.readouterr().out


def test_optimize_writes_nets_that_give_the_same_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, init_out = tmp_path / "opt.pbtxt", tmp_path / "opt_init.pb"
    text = _run(["optimize", MLP, "--init", INIT, "-o", str(out), "--init-out", str(init_out)], capsys)
    assert "rewrites: 4 -> 3 ops (fuse_relu x1)" in text and f"wrote {out}" in text
    opt = read_net(out)
    assert [op.type for op in opt.op] == ["FCRelu", "FC", "Softmax"]
    assert list(opt.external_input) == list(read_net(MLP).external_input)
    assert list(opt.external_output) == ["prob"]
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    _run(["run", MLP, "--init", INIT, "--inputs", DATA, "--outputs", str(a), "--no-optimize"], capsys)
    _run(["run", str(out), "--init", str(init_out), "--inputs", DATA, "--outputs", str(b), "--no-optimize"], capsys)
    np.testing.assert_allclose(load_npz(b)["prob"], load_npz(a)["prob"], rtol=1e-5, atol=1e-7)


def test_optimize_default_init_out_and_verbose_listing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = _run(["optimize", MLP, "--init", INIT, "-o", str(tmp_path / "m.pb"), "-v"], capsys)
    assert (tmp_path / "m_init.pb").exists()
    assert "fuse_relu: op #0 FC 'fc1' + op #1 Relu 'relu1' -> FCRelu writes 'fc1'" in text


def test_optimize_refuses_one_file_for_both(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    same = str(tmp_path / "x.pb")
    assert main(["optimize", MLP, "--init", INIT, "-o", same, "--init-out", same]) == 1
    assert "name the same file" in capsys.readouterr().err


def test_run_rewrites_by_default_with_an_init_net(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    text = _run(["run", MLP, "--init", INIT, "--inputs", DATA, "--outputs", str(a), "--profile"], capsys)
    assert "rewrites: 4 -> 3 ops (fuse_relu x1)" in text
    assert "fuse_relu: op #0 FC 'fc1' + op #1 Relu 'relu1'" in text  # --profile lists each rewrite
    assert "    FCRelu " in text  # the by-type table is after the rewrites
    off = _run(["run", MLP, "--init", INIT, "--inputs", DATA, "--outputs", str(b), "--no-optimize"], capsys)
    assert "rewrites: off (--no-optimize)" in off and "(4 ops" in off
    np.testing.assert_allclose(load_npz(a)["prob"], load_npz(b)["prob"], rtol=1e-5, atol=1e-7)


def test_run_keeps_fetched_intermediate_blobs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o.npz"
    _run(["run", MLP, "--init", INIT, "--inputs", DATA, "--fetch", "fc1", "prob", "--outputs", str(out)], capsys)
    fetched = load_npz(out)
    assert (fetched["fc1"] >= 0).all()  # fc1 holds the Relu'd value, as in the original net


def test_run_without_init_does_not_rewrite(capsys: pytest.CaptureFixture[str]) -> None:
    text = _run(["run", MLP, "--random-init", "--input-shape", "data=2,4"], capsys)
    assert "rewrites: off (no --init" in text and "(4 ops" in text


@pytest.mark.timeout(120)
def test_bench_reports_rewrites_and_offload(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnxruntime")
    js = tmp_path / "b.json"
    argv = ["bench", MLP, "--init", INIT, "--inputs", DATA, "--iters", "2", "--warmup", "1", "-q", "--json", str(js)]
    text = _run([*argv, "--profile-iters", "2"], capsys)
    data = json.loads(js.read_text())
    assert data["transforms"] == ["rewrites: 4 -> 3 ops (fuse_relu x1)"]
    assert {t["type"] for t in data["op_types"]["types"]} == {"FCRelu", "FC", "Softmax"}
    assert any("fuse_relu: op #0 FC" in d for d in data["transform_details"])
    assert text.splitlines()[1] == "rewrites: 4 -> 3 ops (fuse_relu x1)"
    text = _run([*argv, "--profile-iters", "2", "--offload", "onnxruntime", "--compare-onnxruntime"], capsys)
    data = json.loads(js.read_text())
    assert [t["type"] for t in data["op_types"]["types"]] == ["Onnxifi"]
    assert "offload: 3 op(s) in 1 Onnxifi op(s), 0 op(s) stay numpy" in text
    assert data["onnxruntime"]["max_abs_diff"] < 1e-5  # ORT on the original net vs the offloaded run


def test_offload_choice_is_checked(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", MLP, "--init", INIT, "--inputs", DATA, "--offload", "tensorrt"])
    assert "invalid choice: 'tensorrt'" in capsys.readouterr().err
