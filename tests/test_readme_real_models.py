"""The README's "Real models" section: its commands are the test input, run as written.

The commands name files as laid out in ../shared/realnets; they run from a scratch folder that
links that corpus's folders in (so files the commands write land in the scratch folder), and the
test skips cleanly without the corpus.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from asyncnet.cli import main
from tests.conftest import ROOT, realnets_path


def _section_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"^## Real models\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert m, "README.md has no '## Real models' section"
    blocks = re.findall(r"```sh\n(.*?)```", m.group(1), flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip().startswith("asyncnet ")]


def test_section_shows_the_four_kinds_of_model() -> None:
    cmds = [shlex.split(c) for c in _section_commands()]
    assert any(c[1] == "run" and "--random-init" in c and "--init" not in c for c in cmds), "zoo net without weights"
    assert any(c[1] == "run" and "--init" in c and c[2].startswith("third_party") for c in cmds), "init+predict pair"
    assert any(c[1] == "from-caffe" for c in cmds), "Caffe deploy file"
    assert any(c[1] == "to-onnx" for c in cmds), "export to ONNX"
    # Copy-pasteable: one command per line, no placeholders left to fill in.
    assert all(not re.search(r"[<>]|\.\.\.|NAME", " ".join(c)) for c in cmds)


@pytest.mark.timeout(300)
def test_readme_commands_run_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = realnets_path()
    cmds = _section_commands()
    for top in {shlex.split(c)[2].split("/")[0] for c in cmds}:
        if (root / top).is_dir():
            (tmp_path / top).symlink_to(root / top)
    monkeypatch.chdir(tmp_path)
    for cmd in cmds:
        argv = shlex.split(cmd)
        assert argv[0] == "asyncnet"
        rc = main(argv[1:])
        captured = capsys.readouterr()
        assert rc == 0, f"{cmd}\n{captured.err}"
        assert "error" not in captured.err, f"{cmd}\n{captured.err}"
    assert (tmp_path / "squeezenet.onnx").stat().st_size > 1_000_000
    assert (tmp_path / "value_info.json").exists()
