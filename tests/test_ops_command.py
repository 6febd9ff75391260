"""`asyncnet ops`: the operator catalogue, and docs/operators.md kept in step with the registry."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from asyncnet.cli import main
from asyncnet.opdocs import describe_op, operators_markdown
from asyncnet.registry import default_registry
from tests.conftest import ROOT


def test_list_names_every_registered_op(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ops"]) == 0
    out = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in out[:-1]]
    assert names == default_registry().types()
    assert out[-1] == f"{len(names)} operator types"
    relu = next(line for line in out if line.split()[0] == "Relu")
    assert "cpu" in relu


def test_show_one_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ops", "Softmax"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Softmax\n")
    assert "axis = 1" in out
    assert "in-place (input->output): 0->0" in out
    assert "shape inference: yes" in out


def test_show_required_argument_and_counts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ops", "Cast"]) == 0
    out = capsys.readouterr().out
    assert "to = required" in out
    assert main(["ops", "Split"]) == 0
    out = capsys.readouterr().out
    assert "outputs: 1 or more" in out
    assert "inputs: 1 to 2 (input, split)" in out


def test_unknown_name_exits_1_with_suggestion(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ops", "Relux"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("asyncnet ops: error: unknown operator type 'Relux'")
    assert "did you mean 'Relu'" in err
    assert "Traceback" not in err


def test_markdown_to_file_matches_library(tmp_path: Path) -> None:
    out = tmp_path / "ops.md"
    assert main(["ops", "--markdown", "-o", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert text == operators_markdown()
    assert "\n## Relu\n" in text
    assert "| `axis` | 1 |" in text


def test_markdown_rejects_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ops", "--markdown", "Relu"]) == 2
    assert "takes no operator name" in capsys.readouterr().err


def test_describe_op_lines() -> None:
    lines = describe_op("Clip")
    assert lines[0] == "Clip"
    assert any(line.strip().startswith("min = unset") for line in lines)


def test_docs_operators_md_is_current() -> None:
    """Fails when an op was added or changed without regenerating: python tools/gen_op_docs.py"""
    res = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_op_docs.py"), "--check"], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
