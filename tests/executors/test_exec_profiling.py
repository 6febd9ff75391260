"""Per-op statistics and Chrome trace-event output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from asyncnet.cli import main
from asyncnet.executors import ExecutorOptions
from asyncnet.profiling import chrome_trace, format_stats, op_stats, profiler_of
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.workspace import Workspace
from executors.helpers import net, op

NETS = Path(__file__).resolve().parents[2] / "nets"


def wide_net(branches: int = 8, depth: int = 4) -> pb.NetDef:
    """WIDE: independent branches of MatMul + Relu, summed."""
    ops = []
    for b in range(branches):
        src = "x"
        for d in range(depth):
            ops.append(op("MatMul", [src, f"w{b}_{d}"], [f"m{b}_{d}"], name=f"mm{b}_{d}"))
            ops.append(op("Relu", [f"m{b}_{d}"], [f"r{b}_{d}"]))
            src = f"r{b}_{d}"
    ops.append(op("Sum", [f"r{b}_{depth - 1}" for b in range(branches)], ["out"]))
    return net(ops, name="wide")


def feed_wide(ws: Workspace, n: int, branches: int = 8, depth: int = 4) -> None:
    rng = np.random.default_rng(0)
    ws.feed("x", rng.standard_normal((n, n)).astype(np.float32))
    for b in range(branches):
        for d in range(depth):
            ws.feed(f"w{b}_{d}", (rng.standard_normal((n, n)) / np.sqrt(n)).astype(np.float32))


@pytest.mark.timeout(60)
def test_trace_of_wide_run_shows_overlapping_ops_on_two_lanes(tmp_path: Path, no_thread_leak: None) -> None:
    with Workspace() as ws:
        feed_wide(ws, 256)
        n = ws.create_net(wide_net(), options=ExecutorOptions(threads=2, shared_pools=False, profile=True))
        for _ in range(3):
            n.run(timeout=30)
        prof = profiler_of(n)
        assert prof is not None
        trace = chrome_trace(prof, n.infos, net_name=n.name)
        n.close()
    path = tmp_path / "t.json"
    path.write_text(json.dumps(trace))
    data = json.loads(path.read_text())
    events = data["traceEvents"]
    complete = [e for e in events if e["ph"] == "X" and e["cat"] == "op"]
    assert len(complete) == 3 * (8 * 4 * 2 + 1)
    for e in complete:
        assert {"name", "ph", "pid", "tid", "ts", "dur"} <= set(e) and e["dur"] >= 0
    names = {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert all(e["tid"] in names for e in complete)
    mm = sorted((e for e in complete if e["name"] == "MatMul"), key=lambda e: e["ts"])
    overlapping = any(
        a["tid"] != b["tid"] and a["ts"] < b["ts"] + b["dur"] and b["ts"] < a["ts"] + a["dur"]
        for i, a in enumerate(mm)
        for b in mm[i + 1 : i + 20]
    )
    assert overlapping, "no two MatMuls ran at the same time on different threads"
    assert len({e["tid"] for e in complete}) >= 2


def test_op_stats_and_format() -> None:
    with Workspace() as ws:
        ws.feed("x", np.arange(5.0))
        ops = [op("ExecTestSleep", ["x"], ["a"], ms=20.0, name="slow"), op("Relu", ["a"], ["b"], name="fast")]
        for executor in ("simple", "async_scheduling"):
            n = ws.create_net(net(ops, name=f"p_{executor}"), executor=executor, options=ExecutorOptions(profile=True))
            n.run()
            n.run()
            prof = profiler_of(n)
            assert prof is not None and len(prof.runs) == 2
            stats = op_stats(prof, n.infos)
            assert [s.label for s in stats] == ["op #0 ExecTestSleep 'slow'", "op #1 Relu 'fast'"]
            assert stats[0].count == 2 and stats[0].mean >= 0.019 and 0.5 < stats[0].share <= 1.0
            text = "\n".join(format_stats(prof, n.infos))
            assert "2 run(s)" in text and "ExecTestSleep" in text and "by type:" in text
        assert profiler_of(ws.create_net(net(ops, name="plain"))) is None


def test_run_cli_profile_and_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "trace.json"
    args = ["run", str(NETS / "branches.pbtxt"), "--inputs", str(NETS / "branches_input.npz"), "--repeat", "3"]
    assert main([*args, "--profile", "--trace", str(trace), "--threads", "2"]) == 0
    out = capsys.readouterr().out
    assert "profile: 3 run(s)" in out and "op #16 Sum 'join'" in out and "by type:" in out
    assert f"to {trace}" in out
    events = json.loads(trace.read_text())["traceEvents"]
    assert sum(1 for e in events if e.get("cat") == "op") == 3 * 17
    assert main([*args, "--trace", str(tmp_path / "only.json")]) == 0
    out = capsys.readouterr().out
    assert "profile:" not in out and (tmp_path / "only.json").exists()
