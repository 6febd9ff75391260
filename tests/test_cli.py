"""The `asyncnet` CLI contract: run, info, and clear errors (exit 1, no traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from asyncnet.cli import main
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import make_argument, read_net, write_message
from tests.conftest import ROOT

NETS = ROOT / "nets"


def _params() -> dict[str, np.ndarray]:
    """The MLP's weights, read straight from the init net's text (not through asyncnet's kernels)."""
    out = {}
    for op in read_net(NETS / "mlp_init.pbtxt").op:
        args = {a.name: a for a in op.arg}
        out[op.output[0]] = np.array(args["values"].floats, np.float32).reshape(list(args["shape"].ints))
    return out


def test_mlp_matches_independent_numpy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.npz"
    rc = main(
        [
            "run",
            str(NETS / "mlp_predict.pbtxt"),
            "--init",
            str(NETS / "mlp_init.pbtxt"),
            "--inputs",
            str(NETS / "mlp_input.npz"),
            "--outputs",
            str(out),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "prob: shape (2, 3) float32" in text
    p = _params()
    x = np.load(NETS / "mlp_input.npz")["data"].astype(np.float64)
    h = np.maximum(x @ p["fc1_w"].T + p["fc1_b"], 0)
    z = h @ p["fc2_w"].T + p["fc2_b"]
    e = np.exp(z - z.max(axis=1, keepdims=True))
    expect = e / e.sum(axis=1, keepdims=True)
    got = np.load(out)["prob"]
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6)


def test_fetch_names_with_slash_and_repeat(tmp_path: Path) -> None:
    net = pb.NetDef(name="s", external_input=["gpu_0/x"])
    net.op.add(type="Relu", input=["gpu_0/x"], output=["gpu_0/y"])
    write_message(net, tmp_path / "n.pbtxt")
    np.savez(tmp_path / "in.npz", **{"gpu_0/x": np.array([-1.0, 2.0], np.float32)})
    rc = main(
        [
            "run",
            str(tmp_path / "n.pbtxt"),
            "--inputs",
            str(tmp_path / "in.npz"),
            "--fetch",
            "gpu_0/y",
            "--outputs",
            str(tmp_path / "o.npz"),
            "--repeat",
            "3",
        ]
    )
    assert rc == 0
    np.testing.assert_array_equal(np.load(tmp_path / "o.npz")["gpu_0/y"], [0.0, 2.0])


def _err(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("asyncnet ")
    return err


def test_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trunc = tmp_path / "trunc.pb"
    trunc.write_bytes(read_net(NETS / "mlp_predict.pbtxt").SerializeToString()[:-2])
    assert "trunc.pb" in _err(capsys, ["run", str(trunc)])

    garbage = tmp_path / "garbage.pb"
    garbage.write_bytes(bytes(range(7, 250)))
    assert "garbage.pb" in _err(capsys, ["info", str(garbage)])

    syntax = tmp_path / "syntax.pbtxt"
    syntax.write_text('name: "x"\nop {\n  type: Relu"\n}\n')
    assert "line 3" in _err(capsys, ["run", str(syntax)])

    unknown = tmp_path / "unknown.pbtxt"
    net = pb.NetDef(name="u")
    net.op.add(type="Rellu", input=["x"], output=["y"])
    write_message(net, unknown)
    err = _err(capsys, ["run", str(unknown)])
    assert "op #0 Rellu" in err and "did you mean 'Relu'" in err

    arity = tmp_path / "arity.pbtxt"
    net = pb.NetDef(name="a")
    net.op.add(type="Add", input=["x"], output=["y"])
    write_message(net, arity)
    assert "takes 2 input(s), got 1" in _err(capsys, ["run", str(arity)])

    missing_in = _err(capsys, ["run", str(NETS / "mlp_predict.pbtxt"), "--init", str(NETS / "mlp_init.pbtxt")])
    assert "'data'" in missing_in and "nobody fed" in missing_in

    bad_tensor = tmp_path / "badtensor.pbtxt"
    net = pb.NetDef(name="b")
    op = net.op.add(type="GivenTensorFill", output=["w"])
    op.arg.extend([make_argument("shape", [2, 3]), make_argument("values", [1.0, 2.0])])
    write_message(net, bad_tensor)
    assert "'values' has 2 values but shape [2, 3] needs 6" in _err(capsys, ["run", str(bad_tensor)])

    np.savez(tmp_path / "wrongkey.npz", dta=np.ones((2, 4), np.float32))
    err = _err(
        capsys,
        [
            "run",
            str(NETS / "mlp_predict.pbtxt"),
            "--init",
            str(NETS / "mlp_init.pbtxt"),
            "--inputs",
            str(tmp_path / "wrongkey.npz"),
        ],
    )
    assert "'dta'" in err and "not inputs" in err and "data" in err

    assert "no such file" in _err(capsys, ["run", str(tmp_path / "absent.pb")])

    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, data=np.array([{"a": 1}], dtype=object))
    assert "pickled.npz" in _err(capsys, ["run", str(NETS / "mlp_predict.pbtxt"), "--inputs", str(pickled)])

    assert "unknown executor 'fast'" in _err(capsys, ["run", str(NETS / "mlp_predict.pbtxt"), "--executor", "fast"])


def test_failing_operator_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net = pb.NetDef(name="f")
    op = net.op.add(type="Reshape", input=["x"], output=["y"], name="r")
    op.arg.append(make_argument("shape", [7]))
    write_message(net, tmp_path / "f.pbtxt")
    np.savez(tmp_path / "in.npz", x=np.ones(4, np.float32))
    err = _err(capsys, ["run", str(tmp_path / "f.pbtxt"), "--inputs", str(tmp_path / "in.npz")])
    assert "op #0 Reshape 'r'" in err


def test_debug_shows_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "asyncnet", "--debug", "info", str(tmp_path / "absent.pb")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "no such file" in proc.stderr


def test_console_script_runs_bundled_net() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "asyncnet",
            "run",
            str(NETS / "mlp_predict.pbtxt"),
            "--init",
            str(NETS / "mlp_init.pbtxt"),
            "--inputs",
            str(NETS / "mlp_input.npz"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "prob" in proc.stdout
