"""Every real Caffe2 NetDef file parses, round-trips, and `asyncnet info` describes it."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format

from asyncnet.cli import main
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import looks_like_text, read_net
from tests.conftest import REALNETS

NET_DIRS = ("caffe2_model_zoo", "caffe2_repo_assets", "third_party_caffe2_exports")


def _net_files() -> list[Path]:
    files: list[Path] = []
    for d in NET_DIRS:
        root = REALNETS / d
        if root.exists():
            files.extend(sorted(p for p in root.rglob("*") if p.suffix in (".pb", ".pbtxt")))
    return files


NET_FILES = _net_files()
IDS = [str(p.relative_to(REALNETS)) for p in NET_FILES]


def test_corpus_present_or_skipped() -> None:
    if not REALNETS.exists():
        pytest.skip("real-net corpus absent")
    assert len(NET_FILES) >= 20


@pytest.mark.parametrize("path", NET_FILES, ids=IDS)
def test_parses_and_round_trips(path: Path) -> None:
    net = read_net(path)
    data = path.read_bytes()
    if looks_like_text(data):
        printed = text_format.MessageToString(net)
        again = pb.NetDef()
        text_format.Parse(printed, again)
        assert again == net
    else:
        assert net.SerializeToString() == data, "binary NetDef must re-serialize byte-identically"
    assert len(net.op) > 0


@pytest.mark.parametrize("path", NET_FILES, ids=IDS)
def test_info_describes_it(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    net = read_net(path)
    assert f"{len(net.op)} operators" in out
    for op_type in {op.type for op in net.op}:
        assert op_type in out
