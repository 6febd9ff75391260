"""``asyncnet draw``: valid SVG without graphviz, DOT text, options, and clear errors."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import asyncnet.draw as draw_mod
from asyncnet.cli import main
from asyncnet.draw import build_drawing, op_chains, to_dot
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import read_net, write_message
from tests.conftest import realnets_path

SVG = "{http://www.w3.org/2000/svg}"
NETS = {
    "squeezenet": ("caffe2_model_zoo", "squeezenet", "predict_net.pb"),
    "detectron": ("caffe2_model_zoo", "detectron_e2e_faster_rcnn_R-50-C4_1x", "predict_net.pbtxt"),
}


@pytest.fixture(autouse=True)
def _no_graphviz(monkeypatch: pytest.MonkeyPatch) -> None:
    # The built-in layout is what these tests check, whether or not dot is installed here.
    monkeypatch.setattr(draw_mod, "dot_binary", lambda: None)


@pytest.mark.parametrize("key", sorted(NETS))
def test_svg_is_valid_xml_with_every_op(key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = realnets_path(*NETS[key])
    net = read_net(path)
    out = tmp_path / "net.svg"
    assert main(["draw", str(path), "-o", str(out), "--mark-chains", "--color-by", "device"]) == 0
    assert "built-in" in capsys.readouterr().out
    root = ET.parse(out).getroot()
    assert root.tag == f"{SVG}svg"
    groups = root.findall(f"{SVG}g")
    ops = [g for g in groups if g.get("class") == "op"]
    blobs = [g for g in groups if g.get("class") == "blob"]
    assert len(ops) == len(net.op)
    assert {g.findtext(f"{SVG}text") for g in ops} == {op.type for op in net.op}
    assert {g.findtext(f"{SVG}title") for g in blobs} >= set(net.external_output)
    chains = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "chain"]
    assert len(chains) == len([c for c in op_chains(net) if len(c) > 1]) > 0
    # Layered layout: every edge points downwards.
    width, height = float(root.get("width", 0)), float(root.get("height", 0))
    for g in ops:
        rect = g.find(f"{SVG}rect")
        assert rect is not None
        assert 0 <= float(rect.get("x", -1)) <= width and 0 <= float(rect.get("y", -1)) <= height


def test_edges_go_down_and_inplace_blobs_get_versions() -> None:
    net = pb.NetDef(name="inplace")
    net.op.add(type="Relu", input=["x"], output=["x"])
    net.op.add(type="Relu", input=["x"], output=["x"])
    d = build_drawing(net)
    draw_mod.layout(d)
    ids = {n.id: n for n in d.nodes}
    assert [n.label for n in d.nodes if not n.is_op] == ["x", "x", "x"]
    assert all(ids[a].y < ids[b].y for a, b in d.edges)


def test_layout_has_no_overlapping_nodes() -> None:
    d = build_drawing(read_net(realnets_path(*NETS["detectron"])), mark_chains=True)
    width, height = draw_mod.layout(d)
    rows: dict[float, list[tuple[float, float]]] = {}
    for n in d.nodes:
        rows.setdefault(n.y, []).append((n.x - n.width / 2, n.x + n.width / 2))
        assert 0 <= n.x - n.width / 2 and n.x + n.width / 2 <= width and 0 <= n.y <= height
    for spans in rows.values():
        spans.sort()
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    ids = {n.id: n for n in d.nodes}
    assert all(ids[a].y < ids[b].y for a, b in d.edges)


def test_collapse_blobs_and_dot_text(tmp_path: Path) -> None:
    path = realnets_path(*NETS["squeezenet"])
    net = read_net(path)
    d = build_drawing(net, collapse_blobs=True)
    assert all(n.is_op for n in d.nodes)
    assert all(a.startswith("op") and b.startswith("op") for a, b in d.edges)
    out = tmp_path / "net.dot"
    assert main(["draw", str(path), "-o", str(out), "--collapse-blobs", "--mark-chains"]) == 0
    text = out.read_text()
    assert text.startswith("digraph") and text.count(" -> ") == len(d.edges)
    assert "subgraph cluster_chain0" in text


def test_color_by_device_distinguishes_devices() -> None:
    net = pb.NetDef(name="two")
    net.op.add(type="Relu", input=["x"], output=["y"])
    gpu = net.op.add(type="Relu", input=["y"], output=["z"])
    gpu.device_option.device_type = 1
    d = build_drawing(net, color_by="device")
    colors = [n.color for n in d.nodes if n.is_op]
    assert colors[0] != colors[1]
    assert sorted(d.legend.values()) == ["cpu:0", "cuda:0"]
    assert 'fillcolor="' + colors[1] + '"' in to_dot(d)


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net = tmp_path / "n.pbtxt"
    write_message(pb.NetDef(name="n", op=[pb.OperatorDef(type="Relu", input=["x"], output=["y"])]), net)
    assert main(["draw", str(net), "-o", str(tmp_path / "n.png")]) == 1
    err = capsys.readouterr().err
    assert "graphviz" in err and ".svg" in err and not (tmp_path / "n.png").exists()
    assert main(["draw", str(net), "-o", str(tmp_path / "n.gif")]) == 1
    assert "unknown output type '.gif'" in capsys.readouterr().err
    assert main(["draw", str(tmp_path / "missing.pb"), "-o", str(tmp_path / "m.svg")]) == 1
    assert "missing.pb: no such file" in capsys.readouterr().err
    junk = tmp_path / "junk.pb"
    junk.write_bytes(b"\x00\x01\x02garbage\xff")
    assert main(["draw", str(junk), "-o", str(tmp_path / "j.svg")]) == 1
    assert "junk.pb" in capsys.readouterr().err


def test_tools_script_is_the_subcommand() -> None:
    script = Path(__file__).resolve().parents[2] / "tools" / "draw_net.py"
    res = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "usage: asyncnet draw" in res.stdout
