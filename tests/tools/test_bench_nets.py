"""bench/bench_nets.py runs end to end (a smoke test: it measures, it asserts no speed)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_nets.py"


def _module() -> Any:
    spec = importlib.util.spec_from_file_location("bench_nets", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_nets", module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(120)
def test_table_has_every_contender_and_no_output_mismatch(capsys: pytest.CaptureFixture[str]) -> None:
    bn = _module()
    argv = ["--nets", "chain,widetiny,inception", "--rounds", "2", "--sample", "0.005"]
    assert bn.main([*argv, "--variant", "one=async_scheduling,blas_threads=1"]) == 0
    out = capsys.readouterr().out
    assert "note:" not in out, out  # every contender's outputs matched simple's
    header = next(line for line in out.splitlines() if line.startswith("| net |"))
    assert "onnxruntime" in header and "one/simple" in header
    rows = {
        line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ") and "---" not in line
    }
    assert {"CHAIN", "WIDETINY", "INCEPTION x3"} <= set(rows)
    assert "us/op" in rows["CHAIN"] and "overhead over bare numpy" in out


def test_variant_parsing() -> None:
    bn = _module()
    v = bn.parse_variant("x=async_scheduling,blas_threads=1,shared_pools=false,prepare=optimize+pkg.mod:fn")
    assert (v.label, v.executor, v.options, v.prepare) == (
        "x",
        "async_scheduling",
        {"blas_threads": 1, "shared_pools": False},
        ["optimize", "pkg.mod:fn"],
    )
    with pytest.raises(SystemExit, match="unknown key 'bogus'"):
        bn.parse_variant("x=simple,bogus=1")
    with pytest.raises(SystemExit, match="LABEL=EXECUTOR"):
        bn.parse_variant("simple")
    with pytest.raises(SystemExit, match="unknown prepare step"):
        bn._preparer("nope")
