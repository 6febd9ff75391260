"""BLAS-aware scheduling: the governor's policy, and the BLAS thread counts ops see when nets run.

The policy (asyncnet/executors/blas.py): a lone BLAS-heavy chain runs with the library's count;
while two or more run, the process-wide count is 1; afterwards it is what it was before.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from asyncnet.errors import OperatorError, RunCancelledError, RunTimeoutError
from asyncnet.executors import ExecutorOptions
from asyncnet.executors.blas import (
    BlasGovernor,
    BlasLibrary,
    blas_governor,
    blas_op_types,
    find_blas_libraries,
    is_blas_op,
)
from asyncnet.workspace import Workspace
from executors import helpers
from executors.helpers import net, op, run_in_thread

# -- the governor, on fake libraries ------------------------------------------------------------


class FakeLib:
    def __init__(self, count: int) -> None:
        self.count = count
        self.sets: list[int] = []

    def set(self, n: int) -> None:
        self.sets.append(n)
        self.count = n

    def lib(self) -> BlasLibrary:
        return BlasLibrary("fake", lambda: self.count, self.set)


def test_lone_chain_keeps_the_count_and_a_second_lowers_it_to_one() -> None:
    a, b = FakeLib(4), FakeLib(2)
    gov = BlasGovernor([a.lib(), b.lib()])
    gov.enter()
    assert (a.count, b.count, a.sets) == (4, 2, [])
    gov.enter()
    assert (a.count, b.count, gov.running, gov.lowerings) == (1, 1, 2, 1)
    gov.enter()  # a third changes nothing more
    assert (a.sets, b.sets) == ([1], [1])
    gov.exit()
    assert a.count == 1  # two still running
    gov.exit()
    assert (a.count, b.count) == (4, 2)  # one left: it may use every thread again
    gov.exit()
    assert (a.sets, b.sets, gov.running) == ([1, 4], [1, 2], 0)


def test_single_threaded_forces_one_thread_and_composes_with_running_chains() -> None:
    a = FakeLib(4)
    gov = BlasGovernor([a.lib()])
    with gov.single_threaded():
        assert a.count == 1
        gov.enter()
        gov.enter()
        gov.exit()
        gov.exit()
        assert a.count == 1  # chains leaving do not lift a forced limit
    assert a.count == 4
    gov.enter()
    gov.enter()
    with gov.single_threaded():
        assert a.count == 1
    assert a.count == 1  # two chains still run
    gov.exit()
    assert (a.count, a.sets) == (4, [1, 4, 1, 4])
    gov.exit()
    with pytest.raises(RuntimeError), gov.single_threaded():
        raise RuntimeError("boom")
    assert a.count == 4


def test_single_threaded_library_is_left_alone_and_user_changes_are_kept() -> None:
    one, lib = FakeLib(1), FakeLib(2)
    gov = BlasGovernor([one.lib(), lib.lib()])
    gov.enter(), gov.enter()
    gov.exit(), gov.exit()
    assert one.sets == []
    lib.count = 3  # the user changed it between runs: that is what is restored next time
    gov.enter(), gov.enter()
    assert lib.count == 1
    gov.exit(), gov.exit()
    assert lib.count == 3


def test_governor_without_libraries_is_inactive() -> None:
    gov = BlasGovernor([])
    assert not gov.active
    gov.enter(), gov.enter()
    gov.exit(), gov.exit()
    assert gov.running == 0


@pytest.mark.timeout(60)
def test_many_threads_entering_and_leaving_leave_the_count_restored(no_thread_leak: None) -> None:
    lib = FakeLib(8)
    gov = BlasGovernor([lib.lib()])
    wrong: list[tuple[int, int]] = []
    start = threading.Barrier(8, timeout=10)

    def body() -> None:
        start.wait()
        for _ in range(500):
            gov.enter()
            # Inside, the count is 8 only while this chain may be alone; 1 whenever another is inside.
            seen, running = lib.count, gov.running
            if seen not in (1, 8):
                wrong.append((seen, running))
            time.sleep(0)  # let the others in while this one is inside
            gov.exit()

    threads = [threading.Thread(target=body, name=f"gov-{i}") for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not wrong
    assert (gov.running, lib.count) == (0, 8)
    assert lib.sets and lib.sets[-1] == 8 and len(lib.sets) % 2 == 0


def test_blas_op_types_cover_the_gemm_kernels() -> None:
    types = blas_op_types()
    assert {"Conv", "FC", "MatMul", "BatchMatMul", "ConvTranspose", "ExecTestBlasRendezvous"} <= types
    assert not is_blas_op("Relu") and not is_blas_op("Int8Conv")


# -- with the process's OpenBLAS -------------------------------------------------------------


def _blas_now() -> int:
    from threadpoolctl import threadpool_info

    return max((i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"), default=-1)


@pytest.fixture
def openblas() -> Iterator[int]:
    """The process BLAS count before the test (skips without a governable OpenBLAS); checks it after."""
    if not blas_governor().active:
        pytest.skip("no pthreads OpenBLAS to govern in this process")
    helpers.BLAS_SEEN.clear()
    before = _blas_now()
    yield before
    assert _blas_now() == before, "the process-wide BLAS thread count was not restored"
    assert blas_governor().running == 0


def _ws() -> Workspace:
    ws = Workspace()
    ws.feed("x", np.arange(3.0, dtype=np.float32))
    return ws


def _seen() -> dict[str, int]:
    return dict(helpers.BLAS_SEEN)


def test_find_blas_libraries_binds_the_count_threadpoolctl_reports(openblas: int) -> None:
    libs = find_blas_libraries()
    assert libs and max(lib.get() for lib in libs) == openblas


@pytest.mark.timeout(30)
@pytest.mark.parametrize("executor", ["simple", "async_scheduling"])
def test_lone_heavy_op_gets_the_library_count(executor: str, openblas: int, no_thread_leak: None) -> None:
    with _ws() as ws:
        n = ws.create_net(net([op("ExecTestBlasRendezvous", ["x"], [], name="lone")]), executor=executor)
        n.run()
    assert _seen() == {"lone": openblas}


def _two_branches(key: str, *after: str) -> list:  # type: ignore[type-arg]
    """Two heavy ops that meet at a barrier (so both are running), each followed by ``after`` ops."""
    ops = []
    for b in "ab":
        ops.append(op("ExecTestBlasRendezvous", ["x"], [f"{b}0"], name=f"{key}_{b}", key=key, parties=2))
        src = f"{b}0"
        for i, kind in enumerate(after):
            if kind == "sleep":
                ops.append(op("ExecTestSleep", [src], [f"{b}{i + 1}"], ms=20.0))
            elif kind == "fail":
                ops.append(op("ExecTestFail", [src], [f"{b}{i + 1}"], name=f"bad_{b}", message="broke"))
            src = f"{b}{i + 1}"
    return ops


@pytest.mark.timeout(30)
def test_concurrent_heavy_ops_get_one_thread_each_and_a_later_lone_one_all(openblas: int, no_thread_leak: None) -> None:
    ops = _two_branches("pair")
    ops.append(op("ExecTestBlasRendezvous", ["a0", "b0"], [], name="after"))  # waits for both chains
    with _ws() as ws:
        n = ws.create_net(net(ops), options=ExecutorOptions(threads=2, shared_pools=False))
        n.run(timeout=20)
        n.close()
    assert _seen() == {"pair_a": 1, "pair_b": 1, "after": openblas}


@pytest.mark.timeout(30)
def test_heavy_ops_of_two_nets_running_at_once_share_the_policy(openblas: int, no_thread_leak: None) -> None:
    # The count is process-wide, so the governor is too: two nets' heavy ops running at once get 1 each.
    with Workspace() as ws1, Workspace() as ws2:
        n1 = ws1.create_net(net([op("ExecTestBlasRendezvous", [], [], name="n1", key="nets", parties=2)], name="n1"))
        n2 = ws2.create_net(net([op("ExecTestBlasRendezvous", [], [], name="n2", key="nets", parties=2)], name="n2"))
        t, errors = run_in_thread(n1.run)
        n2.run()
        t.join(20)
        assert not errors
    assert _seen() == {"n1": 1, "n2": 1}


@pytest.mark.timeout(30)
def test_count_is_restored_after_a_failing_run(openblas: int, no_thread_leak: None) -> None:
    ops = _two_branches("failing", "fail")
    with _ws() as ws:
        n = ws.create_net(net(ops), options=ExecutorOptions(threads=2, shared_pools=False))
        with pytest.raises(OperatorError, match="broke"):
            n.run(timeout=20)
        n.close()
    assert _seen() == {"failing_a": 1, "failing_b": 1}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("how", ["cancel", "timeout"])
def test_count_is_restored_after_cancel_or_timeout(how: str, openblas: int, no_thread_leak: None) -> None:
    ops = _two_branches(how, *["sleep"] * 50)  # 1 s of sleeping per branch after the rendezvous
    with _ws() as ws:
        n = ws.create_net(net(ops), options=ExecutorOptions(threads=2, shared_pools=False))
        if how == "timeout":
            with pytest.raises(RunTimeoutError):
                n.run(timeout=0.3)
        else:
            t, errors = run_in_thread(n.run)
            deadline = time.monotonic() + 10
            while len(helpers.BLAS_SEEN) < 2 and time.monotonic() < deadline:
                time.sleep(0.005)
            assert blas_governor().running == 2
            n.cancel()
            t.join(20)
            assert len(errors) == 1 and isinstance(errors[0], RunCancelledError)
        n.close()
    assert _seen() == {f"{how}_a": 1, f"{how}_b": 1}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("limit", [1, 2])
def test_explicit_blas_threads_replaces_the_policy(limit: int, openblas: int, no_thread_leak: None) -> None:
    lowered = blas_governor().lowerings
    with _ws() as ws:
        opts = ExecutorOptions(threads=2, shared_pools=False, blas_threads=limit)
        n = ws.create_net(net(_two_branches(f"fixed{limit}")), options=opts)
        n.run(timeout=20)
        n.close()
    assert _seen() == {f"fixed{limit}_a": limit, f"fixed{limit}_b": limit}
    assert blas_governor().lowerings == lowered  # the governor was not involved


@pytest.mark.timeout(60)
def test_big_gemm_branches_agree_with_simple(openblas: int, no_thread_leak: None) -> None:
    # GEMMs large enough for OpenBLAS to thread them, in 4 concurrent branches. Thread counts may differ
    # between executors here, and OpenBLAS's result can then differ in the last bits: compare closely.
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((96, 320)).astype(np.float32)}
    ops = []
    for b in range(4):
        src = "x"
        for d in range(2):
            feeds[f"w{b}{d}"] = (rng.standard_normal((320, 320)) / 18).astype(np.float32)
            ops.append(op("MatMul", [src, f"w{b}{d}"], [f"m{b}{d}"]))
            ops.append(op("Relu", [f"m{b}{d}"], [f"r{b}{d}"]))
            src = f"r{b}{d}"
    ops.append(op("Sum", [f"r{b}1" for b in range(4)], ["out"]))
    outs = {}
    for executor in ("simple", "async_scheduling"):
        with Workspace() as ws:
            for k, v in feeds.items():
                ws.feed(k, v)
            n = ws.create_net(net(ops), executor=executor, options=ExecutorOptions(threads=2, shared_pools=False))
            for _ in range(3):
                n.run(timeout=20)
            outs[executor] = np.array(ws.fetch("out"))
            n.close()
    expected = feeds["x"].astype(np.float64)
    total = np.zeros((96, 320))
    for b in range(4):
        y = expected
        for d in range(2):
            y = np.maximum(y @ feeds[f"w{b}{d}"].astype(np.float64), 0)
        total += y
    np.testing.assert_allclose(outs["simple"], total, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(outs["async_scheduling"], outs["simple"], rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc/self/maps")
def test_maps_scan_finds_the_libraries_threadpoolctl_finds(openblas: int) -> None:
    # Without threadpoolctl the governor finds OpenBLAS in /proc/self/maps: it must see the same files.
    from asyncnet.executors.blas import _paths_from_maps

    found = {os.path.realpath(p) for p in _paths_from_maps()}
    assert {os.path.realpath(lib.path) for lib in find_blas_libraries()} <= found


class CountingGovernor(BlasGovernor):
    def __init__(self) -> None:
        super().__init__([FakeLib(2).lib()])
        self.entered = 0
        self.running_at_enter: list[tuple[str, int]] = []

    def enter(self) -> None:
        self.entered += 1
        self.running_at_enter.append((threading.current_thread().name, self.running))
        super().enter()


@pytest.mark.timeout(30)
def test_only_chains_measured_long_enough_are_governed(no_thread_leak: None) -> None:
    from asyncnet.executors.async_scheduling import GOVERNED_SECONDS

    ops = [op("MatMul", ["x", "x"], [f"m{b}"]) for b in range(3)]
    with Workspace() as ws:
        ws.feed("x", np.eye(4, dtype=np.float32))
        n = ws.create_net(net(ops), options=ExecutorOptions(threads=2, shared_pools=False))
        ex = n.executor
        gov = CountingGovernor()
        ex._gov = gov  # type: ignore[attr-defined]
        ex._heavy = [True] * len(ex._heavy)  # type: ignore[attr-defined]
        ex._cost = [GOVERNED_SECONDS] * len(ex._cost)  # type: ignore[attr-defined]
        n.run(timeout=20)
        entered = gov.entered  # slots are handed from chain to chain, so fewer enters than chains
        assert entered >= 1 and gov.running == 0
        ex._cost = [GOVERNED_SECONDS / 2] * len(ex._cost)  # type: ignore[attr-defined]
        n.run(timeout=20)  # cheap chains: their GEMMs are too small to thread, not worth the governor
        assert gov.entered == entered and gov.running == 0
        n.close()


@pytest.mark.timeout(30)
def test_a_heavy_chain_handed_to_a_woken_thread_is_counted_before_it_starts(no_thread_leak: None) -> None:
    # Relu -> two heavy chains: this thread keeps one and wakes a worker for the other. The governor slot
    # of the handed-off chain is taken at hand-off, so the chain kept here enters with one already inside
    # (its GEMMs start single-threaded instead of sharing the cores with the woken thread's).
    ops = [op("Relu", ["x"], ["r"])]
    ops += [op("ExecTestBlasRendezvous", ["r"], [], name=b) for b in "ab"]
    with _ws() as ws:
        n = ws.create_net(net(ops), options=ExecutorOptions(threads=2, shared_pools=False))
        ex = n.executor
        gov = CountingGovernor()
        ex._gov = gov  # type: ignore[attr-defined]
        ex._heavy = [k > 0 for k in range(len(ex._heavy))]  # type: ignore[attr-defined]
        n.run(timeout=20)
        n.close()
    # both slots taken by this thread: at hand-off (none inside yet), then for its own chain (one inside)
    me = threading.current_thread().name
    assert gov.running_at_enter == [(me, 0), (me, 1)] and gov.running == 0


@pytest.mark.timeout(30)
def test_a_thread_running_heavy_chains_back_to_back_keeps_its_slot(no_thread_leak: None) -> None:
    # One thread, four independent heavy chains: it enters once and hands its slot from chain to chain
    # (no leave/enter flapping in which other threads' GEMMs could start multi-threaded); alone, it
    # never lowers the count.
    helpers.BLAS_SEEN.clear()
    ops = [op("ExecTestBlasRendezvous", ["x"], [f"o{b}"], name=f"h{b}") for b in range(4)]
    with _ws() as ws:
        n = ws.create_net(net(ops), options=ExecutorOptions(threads=1, shared_pools=False))
        ex = n.executor
        gov = CountingGovernor()
        ex._gov = gov  # type: ignore[attr-defined]
        ex._heavy = [True] * len(ex._heavy)  # type: ignore[attr-defined]
        n.run(timeout=20)
        n.close()
    assert (gov.entered, gov.lowerings, gov.running) == (1, 0, 0)
    assert sorted(_seen()) == ["h0", "h1", "h2", "h3"]
