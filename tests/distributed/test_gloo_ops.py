"""The GLOO operators in one process: ranks as threads, each with its own workspace.

Two ranks in one process exercise the real Gloo path (rendezvous, connections, async
collectives) in well under a second, without process start-up costs.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from asyncnet.distributed import DistributedUnavailableError
from asyncnet.distributed._torch import torch_dist
from asyncnet.errors import ArgumentError, OperatorError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import make_argument
from asyncnet.workspace import Workspace
from tests.conftest import ROOT
from tests.distributed.conftest import require_torch

pytestmark = pytest.mark.usefixtures("no_thread_leak")


def _op(net: pb.NetDef, t: str, i: list[str], o: list[str], name: str = "", **args: Any) -> pb.OperatorDef:
    op = net.op.add(type=t, input=i, output=o, name=name, engine="GLOO")
    for k, v in args.items():
        op.arg.append(make_argument(k, v))
    return op


def _on_ranks(size: int, fn: Callable[[int], Any], timeout: float = 60) -> list[Any]:
    """Run ``fn(rank)`` on ``size`` threads; returns results (exceptions as values)."""
    results: list[Any] = [None] * size

    def body(r: int) -> None:
        try:
            results[r] = fn(r)
        except Exception as e:  # collected for the test to inspect
            results[r] = e

    threads = [threading.Thread(target=body, args=(r,), name=f"rank{r}") for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a rank hung"
    return results


def _store_op(net: pb.NetDef, store: dict[str, Any]) -> None:
    if "path" in store:
        _op(net, "FileStoreHandlerCreate", [], ["h"], path=store["path"], prefix=store.get("prefix", ""))
    else:
        _op(net, "TCPStoreHandlerCreate", [], ["h"], host="127.0.0.1", port=store["port"])


def _worlds_net(rank: int, size: int, store: dict[str, Any]) -> pb.NetDef:
    # Rendezvous blocks, so it runs in an init net on the simple executor: the ranks here are
    # threads of one process sharing one worker pool, which blocking ops would exhaust.
    net = pb.NetDef(name=f"worlds_rank{rank}")
    _store_op(net, store)
    _op(net, "CreateCommonWorld", ["h"], ["cw"], name="world", size=size, rank=rank, timeout_ms=20_000)
    _op(net, "CloneCommonWorld", ["cw"], ["cw2"])
    _op(net, "CloneCommonWorld", ["cw"], ["cw3"])
    return net


def _collectives_net(rank: int) -> pb.NetDef:
    net = pb.NetDef(name=f"collectives_rank{rank}", type="async_scheduling")
    _op(net, "Allreduce", ["cw", "x"], ["x"])  # in place
    _op(net, "Allreduce", ["cw2", "a", "b"], ["a_sum", "b_sum"], check=0)  # local inputs are summed too
    _op(net, "Broadcast", ["cw3", "y"], ["y_root1"], root=1)
    op = _op(net, "Allgather", ["cw3", "z"], ["gathered"])
    op.control_input.append("y_root1")  # one world: one collective at a time, same order everywhere
    _op(net, "ReduceScatter", ["cw2", "m"], ["m_block"]).control_input.append("a_sum")
    # Different tensors, each summed on its own (one message per dtype); the first in place.
    _op(net, "AllreduceCoalesced", ["cw3", "c", "d", "e"], ["c", "d_sum", "e_sum"]).control_input.append("gathered")
    _op(net, "Barrier", ["cw"], []).control_input.append("x")
    return net


def _run_collectives(rank: int, size: int, store: dict[str, Any]) -> dict[str, np.ndarray]:
    with Workspace(f"rank{rank}") as ws:
        ws.feed("x", np.full((2, 3), rank + 1.0, np.float32))
        ws.feed("a", np.full(4, rank + 1.0))
        ws.feed("b", np.full(4, 10.0 * (rank + 1)))
        ws.feed("y", np.arange(5, dtype=np.int64) * (rank + 1))
        ws.feed("z", np.array([rank, rank], np.int32))
        ws.feed("m", np.arange(2.0 * size * 3).reshape(2 * size, 3) + rank)
        ws.feed("c", np.arange(6, dtype=np.float32).reshape(2, 3) * (rank + 1))
        ws.feed("d", np.full(4, 0.5 + rank))
        ws.feed("e", np.array([[rank]], np.float32))
        ws.run_net_once(_worlds_net(rank, size, store))
        ws.run_net_once(_collectives_net(rank))
        out = {
            k: np.asarray(ws.fetch(k))
            for k in ("x", "a_sum", "b_sum", "y_root1", "gathered", "m_block", "c", "d_sum", "e_sum")
        }
        destroy = pb.NetDef(name="destroy")
        for w in ("cw", "cw2", "cw3"):
            _op(destroy, "DestroyCommonWorld", [w], [w])
        ws.run_net_once(destroy)
    return out


def _check_collectives(results: list[Any], size: int) -> None:
    m_total = sum(np.arange(2.0 * size * 3).reshape(2 * size, 3) + r for r in range(size))
    for rank, res in enumerate(results):
        assert not isinstance(res, Exception), res
        total = sum(range(1, size + 1))
        np.testing.assert_array_equal(res["x"], np.full((2, 3), total, np.float32))
        np.testing.assert_array_equal(res["a_sum"], np.full(4, total + 10.0 * total))
        np.testing.assert_array_equal(res["b_sum"], res["a_sum"])
        np.testing.assert_array_equal(res["y_root1"], np.arange(5) * 2)
        np.testing.assert_array_equal(res["gathered"], np.repeat(np.arange(size, dtype=np.int32), 2))
        np.testing.assert_array_equal(res["m_block"], m_total[2 * rank : 2 * rank + 2])
        # AllreduceCoalesced: each input summed over ranks on its own, shape and dtype kept.
        c_total = sum(np.arange(6, dtype=np.float32).reshape(2, 3) * (r + 1) for r in range(size))
        np.testing.assert_array_equal(res["c"], c_total)
        assert res["c"].dtype == np.float32 and res["d_sum"].dtype == np.float64
        np.testing.assert_array_equal(res["d_sum"], np.full(4, sum(0.5 + r for r in range(size))))
        np.testing.assert_array_equal(res["e_sum"], np.array([[sum(range(size))]], np.float32))


@pytest.mark.timeout(120)
def test_collectives_over_file_store(tmp_path: Path) -> None:
    require_torch()
    store = {"path": str(tmp_path / "store"), "prefix": "t1"}
    _check_collectives(_on_ranks(2, lambda r: _run_collectives(r, 2, store)), 2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(120)
def test_collectives_over_tcp_store() -> None:
    require_torch()
    store = {"port": _free_port()}
    _check_collectives(_on_ranks(2, lambda r: _run_collectives(r, 2, store)), 2)


@pytest.mark.timeout(120)
def test_mismatched_shapes_fail_every_rank_with_both_shapes(tmp_path: Path) -> None:
    require_torch()

    def rank_fn(rank: int) -> None:
        net = pb.NetDef(name="mismatch")
        _op(net, "FileStoreHandlerCreate", [], ["h"], path=str(tmp_path))
        _op(net, "CreateCommonWorld", ["h"], ["cw"], name="w", size=2, rank=rank, timeout_ms=20_000)
        _op(net, "Allreduce", ["cw", "x"], ["x"], name="sum_x")
        with Workspace() as ws:
            ws.feed("x", np.zeros(3 + rank, np.float32))
            try:
                ws.run_net_once(net)
            finally:
                ws.fetch("cw").destroy()

    results = _on_ranks(2, rank_fn)
    for r in results:
        assert isinstance(r, OperatorError), r
        text = str(r)
        assert "Allreduce 'sum_x'" in text and "disagree" in text, text
        assert "float32[3]" in text and "float32[4]" in text, text


def test_argument_errors_name_the_op(tmp_path: Path) -> None:
    net = pb.NetDef(name="bad")
    _op(net, "FileStoreHandlerCreate", [], ["h"], path=str(tmp_path))
    _op(net, "CreateCommonWorld", ["h"], ["cw"], size=2, rank=2)
    with Workspace() as ws, pytest.raises(ArgumentError, match="CreateCommonWorld.*rank 2, size 2"):
        ws.run_net_once(net)
    net = pb.NetDef(name="bad2")
    _op(net, "Allreduce", ["h", "x"], ["x"])
    with Workspace() as ws:
        ws.feed("h", np.zeros(1))
        ws.feed("x", np.zeros(1))
        with pytest.raises(OperatorError, match="must be a common world"):
            ws.run_net_once(net)
    with Workspace() as ws, pytest.raises(ArgumentError, match="'port' is missing"):
        ws.run_net_once(pb.NetDef(name="t", op=[pb.OperatorDef(type="TCPStoreHandlerCreate", output=["h"])]))


def test_missing_torch_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setitem(sys.modules, "torch.distributed", None)
    with pytest.raises(DistributedUnavailableError, match=r"asyncnet\[distributed\]"):
        torch_dist()


def test_core_import_never_imports_torch() -> None:
    code = (
        "import sys, asyncnet, asyncnet.ops, asyncnet.distributed, asyncnet.distributed.data_parallel;"
        "from asyncnet.registry import default_registry as r;"
        "assert r().schema('Allreduce').doc and r().schema('CreateCommonWorld');"
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.timeout(120)
def test_pending_allreduce_holds_no_thread(tmp_path: Path) -> None:
    """With one executor thread, independent compute runs while an Allreduce waits for a late peer."""
    require_torch()
    import time

    from asyncnet.executors import ExecutorOptions
    from asyncnet.profiling import profiler_of

    def rank_fn(rank: int) -> tuple[float, float, float] | None:
        with Workspace(f"rank{rank}") as ws:
            ws.run_net_once(_worlds_net(rank, 2, {"path": str(tmp_path), "prefix": "hold"}))
            net_def = pb.NetDef(name=f"overlap{rank}", type="async_scheduling")
            _op(net_def, "Allreduce", ["cw", "x"], ["x"], name="slow_sum")
            prev = "y"
            for k in range(20):
                net_def.op.add(type="Relu", input=[prev], output=[f"y{k}"])
                prev = f"y{k}"
            ws.feed("x", np.ones(8, np.float32))
            ws.feed("y", np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32))
            net = ws.create_net(net_def, options=ExecutorOptions(threads=1, profile=True))
            if rank == 1:
                time.sleep(0.5)  # the peer arrives late: rank 0's all-reduce stays pending meanwhile
            net.run()
            prof = profiler_of(net)
            assert prof is not None
            spans = {e.index: (e.start, e.end) for e in prof.events}
            for w in ("cw", "cw2", "cw3"):
                ws.fetch(w).destroy()
            if rank == 1:
                return None
            first_relu_start = min(spans[k][0] for k in range(1, 21))
            last_relu_end = max(spans[k][1] for k in range(1, 21))
            assert first_relu_start > spans[0][0], "the all-reduce (op 0, a root) should start first"
            return spans[0][0], spans[0][1], last_relu_end

    results = _on_ranks(2, rank_fn)
    assert not isinstance(results[0], Exception) and not isinstance(results[1], Exception), results
    start, end, relu_end = results[0]
    assert end - start > 0.3, "the all-reduce should have waited for the late peer"
    assert relu_end < end, "the independent ops should have finished while the all-reduce was pending"


@pytest.mark.timeout(120)
def test_descriptors_are_exchanged_only_when_the_schedule_changes(tmp_path: Path) -> None:
    """check=1 exchanges a collective's descriptor the first time and after a change, check=2 always."""
    require_torch()
    from asyncnet.distributed.checking import CHECK_ALWAYS, CHECK_NONE

    def rank_fn(rank: int) -> list[tuple[int, float]]:
        with Workspace(f"rank{rank}") as ws:
            ws.run_net_once(_worlds_net(rank, 2, {"path": str(tmp_path), "prefix": "sched"}))
            world = ws.fetch("cw")
            seen = []

            def step(n: int, check: int = 1) -> None:
                a = world.allreduce([np.full(n, rank + 1.0)], "a", check=check).result(timeout=30)[0]
                b = world.allreduce_coalesced([np.ones(5), np.ones(2)], "b", check=check).result(timeout=30)
                assert a.shape == (n,) and float(b[1][0]) == 2.0
                seen.append((world.checks, float(a[0])))

            for _ in range(4):
                step(3)  # checks: a, b; then (b -> a) once; then none
            step(4)  # both ranks change a's shape together: a re-checked and agreed, then b (new successor)
            step(4)
            step(4, CHECK_ALWAYS)  # every collective
            step(4, CHECK_NONE)  # none
            for w in ("cw", "cw2", "cw3"):
                ws.fetch(w).destroy()
            return seen

    results = _on_ranks(2, rank_fn)
    for res in results:
        assert not isinstance(res, Exception), res
        assert [c for c, _ in res] == [2, 3, 3, 3, 5, 5, 7, 7], res
        assert all(total == 3.0 for _, total in res), res
