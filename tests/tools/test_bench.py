"""``asyncnet bench`` / tools/bench_net.py and the asyncnet.benchmark library."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from asyncnet.benchmark import Timing, op_type_profile, progress_bar, time_iterations
from asyncnet.cli import main
from asyncnet.errors import ArgumentError
from asyncnet.profiling import Profiler
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import read_net
from asyncnet.shapes import read_value_info
from tests.conftest import realnets_path

ROOT = Path(__file__).resolve().parents[2]
NETS = ROOT / "nets"
MLP = [str(NETS / "mlp_predict.pbtxt"), "--init", str(NETS / "mlp_init.pbtxt"), "--inputs", str(NETS / "mlp_input.npz")]
RATIO = re.compile(r"ratio asyncnet (\S+)/onnxruntime \(median\): ([0-9.]+)")


def _bench(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[str, dict[str, Any]]:
    out_json = tmp_path / "bench.json"
    assert main(["bench", *argv, "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    return text, json.loads(out_json.read_text())


def _op_counts(net: pb.NetDef) -> Counter[str]:
    return Counter(op.type for op in net.op)


def _check_timing(t: dict[str, Any], iters: int) -> None:
    assert t["iters"] == iters and len(t["samples"]) == iters
    assert all(s > 0 for s in t["samples"])
    assert 0 < t["min"] <= t["p10"] <= t["median"] <= t["p90"] <= t["max"]
    assert t["min"] <= t["mean"] <= t["max"]
    assert t["min"] == pytest.approx(min(t["samples"])) and t["max"] == pytest.approx(max(t["samples"]))


def _check_profile(p: dict[str, Any], net: pb.NetDef, iters: int) -> None:
    assert p["iters"] == iters
    # Every op runs once per iteration: calls per type must match the net's own op count.
    assert {t["type"]: t["calls"] for t in p["types"]} == {k: v * iters for k, v in _op_counts(net).items()}
    assert sum(t["share"] for t in p["types"]) == pytest.approx(1.0, abs=1e-6)
    assert sum(t["total_ms"] for t in p["types"]) == pytest.approx(p["busy_ms"])
    assert all(t["total_ms"] > 0 for t in p["types"])
    totals = [t["total_ms"] for t in p["types"]]
    assert totals == sorted(totals, reverse=True)


@pytest.mark.timeout(60)
def test_bench_mlp_output_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*MLP, "--warmup", "1", "--iters", "7", "--profile-iters", "3", "--no-optimize"]
    text, data = _bench(argv, tmp_path, capsys)
    net = read_net(NETS / "mlp_predict.pbtxt")
    assert data["net"] == "mlp_predict" and data["ops"] == 4 and data["iters"] == 7 and data["warmup"] == 1
    assert data["inputs"] == {"data": "(2, 4) float32"}
    (run,) = data["asyncnet"]
    _check_timing(run, 7)
    _check_profile(data["op_types"], net, 3)
    assert data["onnxruntime"] is None
    lines = text.splitlines()
    assert lines[0] == "bench net 'mlp_predict': 4 ops; data inputs: data (2, 4) float32"
    assert lines[1] == "rewrites: off (--no-optimize)"
    assert "1 warmup + 7 timed iteration(s), profiling off" in lines[2]
    row = next(line for line in lines if line.strip().startswith("asyncnet "))
    median_ms = float(row.split()[2])
    assert median_ms == pytest.approx(run["median"], abs=1e-3)
    assert "separate profiled pass" in text and "profiling adds overhead" in text
    shares = [float(m) for m in re.findall(r"^  (?:FC|Relu|Softmax) .* ([0-9.]+)% ", text, re.M)]
    assert len(shares) == 3 and sum(shares) == pytest.approx(100.0, abs=0.3)
    assert f"wrote {tmp_path / 'bench.json'}" in text


@pytest.mark.timeout(60)
def test_bench_compare_onnxruntime_and_two_executors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*MLP, "--iters", "5", "--warmup", "1", "--profile-iters", "0", "--compare-onnxruntime"]
    argv += ["--executor", "simple", "--executor", "dag", "--threads", "2", "--blas-threads", "1"]
    text, data = _bench(argv, tmp_path, capsys)
    assert [r["executor"] for r in data["asyncnet"]] == ["simple", "async_scheduling"]
    assert all(r["threads"] == 2 and r["blas_threads"] == 1 for r in data["asyncnet"])
    assert "asyncnet async_scheduling x2 blas1 " in text
    ort = data["onnxruntime"]
    assert ort["error"] is None
    _check_timing(ort["timing"], 5)
    assert ort["max_abs_diff"] < 1e-5  # the exported model computes the same outputs
    ratios = dict(RATIO.findall(text))
    assert set(ratios) == {"simple", "async_scheduling"}
    for name, r in data["ratio_vs_onnxruntime"].items():
        run = next(x for x in data["asyncnet"] if x["executor"] == name)
        assert r == pytest.approx(run["median"] / ort["timing"]["median"])
        assert float(ratios[name]) == pytest.approx(r, rel=1e-2, abs=1e-3)
    assert "ratio async_scheduling/simple (median):" in text
    assert data["op_types"] is None and "per op type" not in text


@pytest.mark.timeout(60)
def test_bench_profiles_with_the_first_executor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*MLP, "--iters", "2", "--warmup", "1", "--profile-iters", "4", "--executor", "async_scheduling"]
    argv.append("--no-optimize")
    text, data = _bench([*argv, "--executor", "simple"], tmp_path, capsys)
    assert data["op_types"]["executor"] == "async_scheduling"
    _check_profile(data["op_types"], read_net(NETS / "mlp_predict.pbtxt"), 4)
    assert "separate profiled pass, executor async_scheduling, 4 iteration(s)" in text


@pytest.mark.timeout(60)
def test_bench_onnx_export_failure_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net = tmp_path / "cube.pbtxt"
    net.write_text(
        'name: "cube"\nop { input: "x" output: "y" type: "Cube" }\nexternal_input: "x"\nexternal_output: "y"\n'
    )
    text, data = _bench(
        [str(net), "--input-shape", "x=3,4", "--iters", "2", "--warmup", "0", "--compare-onnxruntime"], tmp_path, capsys
    )
    assert "onnxruntime: no comparison (" in text and "Cube" in data["onnxruntime"]["error"]
    assert data["onnxruntime"]["timing"] is None and "ratio_vs_onnxruntime" not in data
    _check_timing(data["asyncnet"][0], 2)


@pytest.mark.timeout(120)
def test_bench_squeezenet_random_init(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = realnets_path("caffe2_model_zoo", "squeezenet")
    (name, info), *_ = read_value_info(folder / "value_info.json").items()
    assert info.shape is not None
    shape = ",".join(str(d) for d in info.shape)
    net_path = folder / "predict_net.pb"
    argv = [str(net_path), "--input-shape", f"{name}={shape}", "--random-init", "--seed", "1"]
    text, data = _bench(
        [*argv, "--warmup", "1", "--iters", "2", "--profile-iters", "1", "--compare-onnxruntime"], tmp_path, capsys
    )
    net = read_net(net_path)
    assert data["ops"] == len(net.op) and data["inputs"] == {name: f"{tuple(info.shape)} float32"}
    _check_timing(data["asyncnet"][0], 2)
    _check_profile(data["op_types"], net, 1)
    assert data["op_types"]["types"][0]["type"] == "Conv"  # convolutions dominate squeezenet
    assert data["onnxruntime"]["error"] is None and data["onnxruntime"]["max_abs_diff"] < 1e-3
    assert float(RATIO.search(text).group(2)) > 0  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--iters", "0"], "--iters must be at least 1, got 0"),
        (["--warmup", "-1"], "--warmup must be 0 or more"),
        (["--threads", "0"], "--threads must be at least 1"),
        (["--input-shape", "data=2,x"], "dims must be integers"),
        (["--input-shape", "nope=1,2"], "--input-shape names ['nope'], which are not inputs"),
        (["--executor", "warp"], "unknown executor 'warp'"),
        (["--blas-threads", "0"], "blas_threads must be at least 1"),
    ],
)
def test_bench_bad_options_exit_1(extra: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", *MLP, "--iters", "1", "--warmup", "0", "--profile-iters", "0", *extra]) == 1
    err = capsys.readouterr().err
    assert err.startswith("asyncnet bench: error: ") and message in err


def test_bench_missing_file_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.pb"
    assert main(["bench", str(missing)]) == 1
    err = capsys.readouterr().err
    assert "asyncnet bench: error:" in err and str(missing) in err
    assert main(["bench", *MLP[:3], "--inputs", str(tmp_path / "in.npz")]) == 1
    assert "in.npz: no such file" in capsys.readouterr().err


def test_run_bad_input_shape_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    # run shares the option checks with bench (commands._common.read_net_setup).
    assert main(["run", *MLP[:3], "--input-shape", "data=2,x"]) == 1
    assert "dims must be integers" in capsys.readouterr().err


@pytest.mark.timeout(60)
def test_tool_script_runs() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "bench_net.py"), *MLP, "--iters", "2", "--warmup", "0", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("bench net 'mlp_predict'")
    assert proc.stderr == ""  # not a terminal: no progress bar


# -- library -------------------------------------------------------------------


def _naive_percentile(values: list[float], q: float) -> float:
    # Linear interpolation between closest ranks, written out by hand.
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def test_timing_summary_matches_naive() -> None:
    samples = [0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.25]
    t = Timing(tuple(samples))
    assert t.median == pytest.approx(0.3)
    assert t.p10 == pytest.approx(_naive_percentile(samples, 10))
    assert t.p90 == pytest.approx(_naive_percentile(samples, 90))
    assert (t.min, t.max) == (0.1, 0.9)
    assert t.mean == pytest.approx(sum(samples) / len(samples))
    assert t.as_dict()["median"] == pytest.approx(300.0)
    with pytest.raises(ArgumentError):
        Timing(())


def test_time_iterations_counts_calls() -> None:
    calls: list[int] = []
    ticks: list[int] = []
    t = time_iterations(lambda: calls.append(1), warmup=3, iters=4, progress=ticks.append)
    assert len(calls) == 7 and sum(ticks) == 7 and len(t.samples) == 4
    with pytest.raises(ArgumentError, match="at least 1"):
        time_iterations(lambda: None, warmup=0, iters=0)


def test_op_type_profile_aggregates_by_type() -> None:
    from asyncnet.net import op_info

    defs = [pb.OperatorDef(type=t, input=["a"], output=["b"]) for t in ("Relu", "Sigmoid", "Relu")]
    infos = [op_info(d, index=i) for i, d in enumerate(defs)]
    prof = Profiler()
    # Two runs of 1.0 s wall; the Relus take 0.1 + 0.3, the Sigmoid 0.2 per run.
    for base in (0.0, 10.0):
        prof.run(base, base + 1.0)
        prof.op(0, base, base + 0.1)
        prof.op(1, base + 0.1, base + 0.3)
        prof.op(2, base + 0.3, base + 0.6)
    p = op_type_profile(prof, infos, executor="simple")
    assert p.iters == 2 and p.wall == pytest.approx(2.0) and p.busy == pytest.approx(1.2)
    assert [(s.type, s.calls) for s in p.types] == [("Relu", 4), ("Sigmoid", 2)]
    assert p.types[0].total == pytest.approx(0.8) and p.types[0].share == pytest.approx(0.8 / 1.2)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    with progress_bar("x", 3, enabled=True) as tick:
        assert tick is None  # pytest's captured stderr is not a terminal
    fake = _Tty()
    monkeypatch.setattr(sys, "stderr", fake)
    with progress_bar("x", 3, enabled=False) as tick:
        assert tick is None
    with progress_bar("bench", 3, enabled=True) as tick:
        assert tick is not None
        for _ in range(3):
            tick(1)
    # tqdm rate-limits redraws, so only the first frame is certain; leave=False clears the line at the end.
    assert "bench:" in fake.getvalue() and "0/3" in fake.getvalue()


def test_bench_net_times_after_the_blas_policy_chose() -> None:
    """bench_net's timed runs show the measured BLAS policy's steady state, not its first timings."""
    import numpy as np

    from asyncnet.benchmark import settle_blas_policy
    from asyncnet.net import Net
    from asyncnet.workspace import Workspace

    ws = Workspace()
    ws.feed("x", np.ones((160, 160), np.float32))
    nd = pb.NetDef(name="mm", type="async_scheduling")
    for b in range(2):
        ws.feed(f"w{b}", np.eye(160, dtype=np.float32))
        for d in range(3):  # chains of a few GEMMs: more than a hand-off, so no plain-loop shortcut
            nd.op.add(type="MatMul", input=[f"y{b}{d - 1}" if d else "x", f"w{b}"], output=[f"y{b}{d}"])
    with Net(nd, ws) as net:
        ex = net.executor
        chooser = ex.mode_chooser  # type: ignore[attr-defined]
        if chooser is None:
            pytest.skip("no pthreads OpenBLAS: no measured BLAS policy in this numpy build")
        runs = settle_blas_policy(net)
        assert ex.blas_policy_settled  # type: ignore[attr-defined]
        assert runs <= 40
        if chooser.chosen is not None:
            assert runs >= 4 * len(chooser.modes) - 1  # 1 untimed + 3 timed runs per way
        assert settle_blas_policy(net) == 0  # settled nets run nothing more
    ws.close()
