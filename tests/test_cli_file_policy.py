"""File access policy on the command line (issue 16): escapes refused with exit 1 and one message,
allow flags, audit listings in info/check, nested subnets and plans, ONNX external data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from asyncnet.cli import main
from asyncnet.commands._common import save_npz

SAVE = """
op {{ input: "x" type: "Save"
  arg {{ name: "db" s: "{db}" }} arg {{ name: "db_type" s: "minidb" }} arg {{ name: "absolute_path" i: 1 }} }}
"""
LOAD = """
op {{ output: "x" type: "Load"
  arg {{ name: "db" s: "{db}" }} arg {{ name: "db_type" s: "minidb" }} arg {{ name: "absolute_path" i: 1 }} }}
"""
IF_NET = """
name: "outer"
external_input: "cond"
external_input: "x"
op {{ input: "cond" input: "x" type: "If"
  arg {{ name: "then_net" n {{ name: "then" {save} }} }} }}
"""
PLAN = """
name: "p"
network {{ name: "writer" external_input: "x" {save} }}
execution_step {{ name: "s" substep {{ name: "inner" network: "writer" }} }}
"""


@pytest.fixture
def sub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A downloaded-model folder ``sub/`` that is also the current folder, with an input file."""
    folder = tmp_path / "sub"
    folder.mkdir()
    monkeypatch.chdir(folder)
    save_npz(folder / "in.npz", {"x": np.arange(3, dtype=np.float32)})
    save_npz(folder / "if.npz", {"x": np.arange(3, dtype=np.float32), "cond": np.array(True)})
    return folder


def _write(folder: Path, name: str, text: str) -> str:
    (folder / name).write_text(text)
    return str(folder / name)


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str], *expect: str) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"asyncnet {argv[0]}: error: refusing to run"), err
    assert "--allow-write" in err and "--allow-any-path" in err
    for e in expect:
        assert e in err, err
    return err


def test_run_refuses_relative_escape_and_writes_nothing(sub: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net = _write(sub, "net.pbtxt", 'external_input: "x"' + SAVE.format(db="../escape.minidb"))
    _refused(capsys, ["run", net, "--inputs", "in.npz"], "op #0 Save", "../escape.minidb", "would write")
    assert not (sub.parent / "escape.minidb").exists()


def test_run_refuses_absolute_write_and_read(sub: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    net = _write(sub, "w.pbtxt", 'external_input: "x"' + SAVE.format(db=elsewhere / "out.minidb"))
    _refused(capsys, ["run", net, "--inputs", "in.npz"], str(elsewhere / "out.minidb"))
    reader = _write(sub, "r.pbtxt", LOAD.format(db="/etc/passwd"))
    _refused(capsys, ["run", reader], "would read '/etc/passwd'")


def test_symlink_out_of_the_allowed_folder_is_refused(
    sub: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, sub / "link")
    net = _write(sub, "net.pbtxt", 'external_input: "x"' + SAVE.format(db="link/x.minidb"))
    _refused(capsys, ["run", net, "--inputs", "in.npz"], f"resolves to {outside / 'x.minidb'}")
    assert not (outside / "x.minidb").exists()


def test_nested_subnet_and_plan_are_refused(sub: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nested = _write(sub, "if.pbtxt", IF_NET.format(save=SAVE.format(db="../if.minidb")))
    _refused(capsys, ["run", nested, "--inputs", "if.npz"], "op #0 If then_net 'then': op #0 Save")
    plan = _write(sub, "plan.pbtxt", PLAN.format(save=SAVE.format(db="../plan.minidb")))
    _refused(capsys, ["run-plan", plan, "--inputs", "in.npz"], "plan net 'writer': op #0 Save")
    assert not (sub.parent / "if.minidb").exists() and not (sub.parent / "plan.minidb").exists()


def test_bench_and_check_apply_the_same_defaults(sub: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net = _write(sub, "net.pbtxt", 'external_input: "x"' + SAVE.format(db="../escape.minidb"))
    _refused(capsys, ["bench", net, "--inputs", "in.npz", "--iters", "1", "-q"], "op #0 Save")
    assert main(["check", net]) == 1
    out = capsys.readouterr().out
    assert "write  ../escape.minidb -> " in out and "[REFUSED by the file access policy]" in out
    assert main(["check", net, "--allow-write", ".."]) == 0
    assert "REFUSED" not in capsys.readouterr().out


def test_allow_flags_widen_the_policy(sub: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net = _write(sub, "net.pbtxt", 'external_input: "x"' + SAVE.format(db="../escape.minidb"))
    assert main(["run", net, "--inputs", "in.npz", "--allow-write", str(tmp_path)]) == 0
    assert (tmp_path / "escape.minidb").exists()
    # Reading it back needs only read access; --allow-read widens reads but not writes.
    reader = _write(sub, "r.pbtxt", LOAD.format(db="../escape.minidb"))
    assert main(["run", reader, "--allow-read", str(tmp_path), "--fetch", "x"]) == 0
    assert "x: shape (3,) float32" in capsys.readouterr().out
    _refused(capsys, ["run", net, "--inputs", "in.npz", "--allow-read", str(tmp_path)], "would write")
    (tmp_path / "escape.minidb").unlink()
    assert main(["run", net, "--inputs", "in.npz", "--allow-any-path"]) == 0
    assert "warning: --allow-any-path" in capsys.readouterr().err
    assert (tmp_path / "escape.minidb").exists()


def test_net_folder_is_readable_and_cwd_writable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models, work = tmp_path / "models", tmp_path / "work"
    models.mkdir()
    work.mkdir()
    monkeypatch.chdir(work)
    save_npz(work / "in.npz", {"x": np.arange(3, dtype=np.float32)})
    writer = _write(models, "w.pbtxt", 'external_input: "x"' + SAVE.format(db=work / "ck.minidb"))
    assert main(["run", writer, "--inputs", "in.npz"]) == 0
    (work / "ck.minidb").rename(models / "ck.minidb")
    reader = _write(models, "r.pbtxt", LOAD.format(db=models / "ck.minidb"))
    assert main(["run", reader, "--fetch", "x"]) == 0
    bad = _write(models, "w2.pbtxt", 'external_input: "x"' + SAVE.format(db=models / "x.minidb"))
    assert main(["run", bad, "--inputs", "in.npz"]) == 1  # the net's folder is not writable


def test_info_lists_every_file_op_with_resolved_paths(sub: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nested = _write(sub, "if.pbtxt", IF_NET.format(save=SAVE.format(db="../if.minidb")))
    assert main(["info", nested]) == 0
    out = capsys.readouterr().out
    resolved = str((sub.parent / "if.minidb").resolve())
    assert f"write  ../if.minidb -> {resolved}   (op #0 If then_net 'then': op #0 Save, argument 'db')" in out
    plan = _write(sub, "plan.pbtxt", PLAN.format(save=SAVE.format(db="ok.minidb")))
    assert main(["info", plan]) == 0
    out = capsys.readouterr().out
    assert "plan 'p'" in out and "(plan net 'writer': op #0 Save, argument 'db')" in out and "REFUSED" not in out
    plain = _write(sub, "plain.pbtxt", 'op { input: "x" output: "y" type: "Relu" }')
    assert main(["info", plain]) == 0
    assert "file access: none" in capsys.readouterr().out


def test_onnx_external_data_outside_the_model_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    folder = tmp_path / "model"
    folder.mkdir()
    np.arange(4, dtype=np.float32).tofile(tmp_path / "secret.bin")
    np.arange(4, dtype=np.float32).tofile(folder / "ok.bin")
    os.symlink(tmp_path / "secret.bin", folder / "link.bin")

    def model(location: str) -> str:
        t = helper.make_tensor("w", TensorProto.FLOAT, [4], vals=np.zeros(4, np.float32).tobytes(), raw=True)
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        t.external_data.add(key="location", value=location)
        g = helper.make_graph(
            [helper.make_node("Add", ["x", "w"], ["y"])],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
            [t],
        )
        path = folder / f"m{abs(hash(location))}.onnx"
        path.write_bytes(helper.make_model(g).SerializeToString())
        return str(path)

    out = ["-o", str(tmp_path / "p.pbtxt"), "--init", str(tmp_path / "i.pbtxt")]
    for location in ("../secret.bin", str(tmp_path / "secret.bin"), "link.bin"):
        assert main(["from-onnx", model(location), *out]) == 1
        err = capsys.readouterr().err
        assert "tensor 'w' external data" in err and ("refusing to read" in err or "relative" in err), err
    assert main(["from-onnx", model("ok.bin"), *out]) == 0
    assert "floats: 3.0" in (tmp_path / "i.pbtxt").read_text()
    assert onnx is not None


def test_caffe_translator_never_opens_files_a_prototxt_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.prototxt").write_text(
        'name: "D" layer { name: "data" type: "Data" top: "data" data_param { source: "/nonexistent/lmdb" '
        'batch_size: 2 } transform_param { mean_file: "../../nonexistent.binaryproto" crop_size: 8 } }'
        'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 3 } }'
    )
    # Both files are absent: translating succeeds only because neither is opened.
    assert main(["from-caffe", "d.prototxt", "-o", "p.pb", "--init", "i.pb"]) == 0
    out = capsys.readouterr().out
    assert "never read: /nonexistent/lmdb, ../../nonexistent.binaryproto" in out
