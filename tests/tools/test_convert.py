"""``asyncnet convert``: lossless pb/pbtxt/json round trips, type detection, init net <-> .npz."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from asyncnet.cli import main
from asyncnet.commands._common import load_npz
from asyncnet.convert import arrays_to_init_net, init_net_to_arrays, read_any, write_as
from asyncnet.errors import ParseError, UnsupportedError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import make_argument, numpy_to_tensor, read_net, write_message
from asyncnet.workspace import Workspace
from tests.conftest import REALNETS, realnets_path

# Every NetDef of the corpus, the multi-megabyte weight nets included (they take ~15-30 s each in
# text form: protobuf's text parser is pure Python).
NETDEFS = sorted(
    str(p.relative_to(REALNETS)) for p in REALNETS.glob("**/*.pb*") if not p.name.endswith("_output_0.pb")
) or ["caffe2_model_zoo/squeezenet/predict_net.pb"]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("rel", NETDEFS)
def test_round_trip_is_lossless(rel: str, tmp_path: Path) -> None:
    original = read_net(realnets_path(*rel.split("/")))
    src = tmp_path / "a.pb"
    write_message(original, src)
    chain = [tmp_path / "b.pbtxt", tmp_path / "c.json", tmp_path / "d.pb"]
    prev = src
    for dest in chain:
        assert main(["convert", str(prev), str(dest)]) == 0
        prev = dest
    for path in chain:
        assert read_any(path) == original, path
    assert (tmp_path / "d.pb").read_bytes() == original.SerializeToString()


def test_detects_plan_and_tensors(tmp_path: Path) -> None:
    plan = pb.PlanDef(name="plan")
    plan.network.add(name="n").op.add(type="Relu", input=["x"], output=["y"])
    plan.execution_step.add(name="s", network=["n"], num_iter=3)
    tensors = pb.TensorProtos()
    tensors.protos.append(numpy_to_tensor(np.arange(6, dtype=np.float32).reshape(2, 3), "w"))
    tensors.protos.append(numpy_to_tensor(np.array([1, 2], dtype=np.int64), "i"))
    for msg, stem in ((plan, "plan"), (tensors, "tensors")):
        for ext in (".pb", ".pbtxt", ".json"):
            path = tmp_path / f"{stem}{ext}"
            write_as(msg, path)
            got = read_any(path)
            assert type(got) is type(msg) and got == msg, path


def test_type_flag_forces_message_type(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net = read_net(Path(__file__).resolve().parents[2] / "nets" / "mlp_predict.pbtxt")
    src = tmp_path / "n.pbtxt"
    write_message(net, src)
    assert main(["convert", str(src), str(tmp_path / "n.json"), "--type", "net"]) == 0
    assert "NetDef" in capsys.readouterr().out
    assert main(["convert", str(src), str(tmp_path / "n.json"), "--type", "plan"]) == 1
    assert "PlanDef" in capsys.readouterr().err


def test_init_predict_pair_to_folder(tmp_path: Path) -> None:
    init = realnets_path("caffe2_model_zoo", "style_transfer_crayon", "crayon_init.pb")
    predict = realnets_path("caffe2_model_zoo", "style_transfer_crayon", "crayon_predict.pb")
    out = tmp_path / "out"
    assert main(["convert", "--init", str(init), "--predict", str(predict), str(out), "--format", "pbtxt"]) == 0
    assert read_any(out / "crayon_init.pbtxt") == read_net(init)
    assert read_any(out / "crayon_predict.pbtxt") == read_net(predict)


def test_merge_real_init_net_round_trip(tmp_path: Path) -> None:
    init_path = realnets_path("caffe2_model_zoo", "style_transfer_crayon", "crayon_init.pb")
    npz = tmp_path / "w.npz"
    assert main(["convert", str(init_path), str(npz), "--merge"]) == 0
    arrays = load_npz(npz)
    back = tmp_path / "init.pbtxt"
    assert main(["convert", str(npz), str(back), "--merge"]) == 0
    # Independent check: run both init nets and compare what they create.
    with Workspace() as ws:
        ws.run_net_once(read_net(init_path))
        want = {k: ws.fetch(k) for k in arrays}
    with Workspace() as ws:
        ws.run_net_once(read_net(back))
        for k, v in want.items():
            got = ws.fetch(k)
            assert got.dtype == v.dtype and got.shape == v.shape, k
            np.testing.assert_array_equal(got, v)
            np.testing.assert_array_equal(arrays[k], v)


def _typed_init() -> tuple[pb.NetDef, dict[str, np.ndarray]]:
    expected = {
        "f": np.array([[1.5, -2.25], [3.0, 0.1]], np.float32),
        "d": np.array([0.5, 2.0], np.float64),
        "i": np.array([[1, -2, 3]], np.int32),
        "l": np.array([2**40, -5], np.int64),
        "s": np.array([7, -8], np.int16),
        "b": np.array([True, False, True]),
        "e": np.zeros((0, 3), np.float32),
    }
    kinds = {
        "f": "GivenTensorFill",
        "d": "GivenTensorDoubleFill",
        "i": "GivenTensorIntFill",
        "l": "GivenTensorInt64Fill",
        "s": "GivenTensorInt16Fill",
        "b": "GivenTensorBoolFill",
        "e": "GivenTensorFill",
    }
    net = pb.NetDef(name="typed")
    for k, v in expected.items():
        op = net.op.add(type=kinds[k], output=[k])
        op.arg.append(make_argument("shape", list(v.shape)))
        vals = [int(x) for x in v.reshape(-1)] if v.dtype.kind in "bi" else [float(x) for x in v.reshape(-1)]
        op.arg.append(make_argument("values", vals) if vals else pb.Argument(name="values"))
    net.op.add(type="ConstantFill", output=["c"]).arg.extend(
        [make_argument("shape", [2, 2]), make_argument("value", 3), make_argument("dtype", pb.TensorProto.INT32)]
    )
    expected["c"] = np.full((2, 2), 3, np.int32)
    return net, expected


def test_merge_preserves_dtypes(tmp_path: Path) -> None:
    net, expected = _typed_init()
    src = tmp_path / "init.pb"
    write_message(net, src)
    npz = tmp_path / "w.npz"
    assert main(["convert", str(src), str(npz), "--merge"]) == 0
    arrays = load_npz(npz)
    assert set(arrays) == set(expected)
    for k, v in expected.items():
        assert arrays[k].dtype == v.dtype, k
        np.testing.assert_array_equal(arrays[k], v)
    back = arrays_to_init_net(arrays)
    assert init_net_to_arrays(back).keys() == expected.keys()
    with Workspace() as ws:
        ws.run_net_once(back)
        for k, v in expected.items():
            got = ws.fetch(k)
            assert got.dtype == v.dtype, k
            np.testing.assert_array_equal(got, v)


def test_merge_refuses_unfoldable_ops(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net = pb.NetDef(name="rand")
    net.op.add(type="XavierFill", output=["w"]).arg.append(make_argument("shape", [2, 2]))
    src = tmp_path / "init.pbtxt"
    write_message(net, src)
    assert main(["convert", str(src), str(tmp_path / "w.npz"), "--merge"]) == 1
    err = capsys.readouterr().err
    assert "op #0 XavierFill" in err and "cannot fold" in err
    with pytest.raises(UnsupportedError, match="float16"):
        arrays_to_init_net({"h": np.zeros(2, np.float16)})


def test_cli_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", str(tmp_path / "missing.pb"), str(tmp_path / "o.pbtxt")]) == 1
    assert "missing.pb: no such file" in capsys.readouterr().err
    junk = tmp_path / "junk.pb"
    junk.write_bytes(bytes(range(256)) * 4)
    assert main(["convert", str(junk), str(tmp_path / "o.pbtxt")]) == 1
    err = capsys.readouterr().err
    assert "junk.pb" in err and "NetDef" in err and "Traceback" not in err
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"op": [{"tpye": "Relu"}]}')
    assert main(["convert", str(bad_json), str(tmp_path / "o.pb")]) == 1
    assert "tpye" in capsys.readouterr().err
    assert main(["convert", str(junk)]) == 1
    assert "IN and OUT" in capsys.readouterr().err
    net = tmp_path / "n.pbtxt"
    write_message(pb.NetDef(name="n", external_input=["x"]), net)
    assert main(["convert", str(net), str(tmp_path / "n.npz")]) == 1
    assert "--merge" in capsys.readouterr().err
    with pytest.raises(ParseError):
        read_any(tmp_path)


def test_tools_script_is_the_subcommand() -> None:
    script = Path(__file__).resolve().parents[2] / "tools" / "convert.py"
    res = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "usage: asyncnet convert" in res.stdout
