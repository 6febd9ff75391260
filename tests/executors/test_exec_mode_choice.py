"""The measured BLAS policy: ModeChooser's choices, and async_scheduling / RNN timesteps using it.

Where two BLAS-heavy chains can overlap, async_scheduling times scheduled runs (concurrent chains,
one BLAS thread each) against sequential ones (NetDef order, every BLAS thread) and keeps the
faster; the recurrent op does the same for threaded vs sequential timesteps.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from asyncnet.errors import OperatorError
from asyncnet.executors import ExecutorOptions
from asyncnet.executors.async_scheduling import AsyncSchedulingExecutor, concurrent_pair
from asyncnet.executors.mode_choice import ModeChooser
from asyncnet.workspace import Workspace
from executors import helpers
from executors.helpers import net, op

pytestmark = pytest.mark.timeout(60)


def drive(ch: ModeChooser, cost: dict[str, float], runs: int) -> list[str]:
    """Run ``runs`` picks, each taking ``cost[mode]`` seconds; the modes picked, in order."""
    picked = []
    for _ in range(runs):
        m = ch.pick()
        picked.append(m)
        ch.record(m, cost[m])
    return picked


def test_times_both_modes_then_keeps_the_faster() -> None:
    ch = ModeChooser(("a", "b"), samples=3, explore_every=10)
    picked = drive(ch, {"a": 2.0, "b": 1.0}, 8)
    # 1 untimed + 3 timed runs of each mode, preferred first, then the choice.
    assert picked == ["a"] * 4 + ["b"] * 4
    assert ch.chosen == "b"
    assert drive(ch, {"a": 2.0, "b": 1.0}, 5) == ["b"] * 5


def test_the_preferred_mode_wins_within_the_margin() -> None:
    ch = ModeChooser(("a", "b"), samples=2, margin=0.05)
    drive(ch, {"a": 1.0, "b": 0.97}, 6)
    assert ch.chosen == "a"
    ch2 = ModeChooser(("a", "b"), samples=2, margin=0.05)
    drive(ch2, {"a": 1.0, "b": 0.9}, 6)
    assert ch2.chosen == "b"


def test_re_times_the_other_mode_and_follows_a_change_of_load() -> None:
    ch = ModeChooser(("a", "b"), samples=2, explore_every=5)
    drive(ch, {"a": 1.0, "b": 2.0}, 6)
    assert ch.chosen == "a"
    # The first run after the choice is untimed (a switch), then 5 timed runs, then "b" again.
    picked = drive(ch, {"a": 1.0, "b": 2.0}, 9)
    assert picked == ["a"] * 6 + ["b"] * 3
    assert ch.chosen == "a"
    # Now "b" became faster (say the machine got busy): the next re-timing switches.
    picked = drive(ch, {"a": 3.0, "b": 1.0}, 20)
    assert ch.chosen == "b" and ch.switches == 1
    assert picked[-1] == "b"


def test_three_modes_are_timed_in_turn_and_each_re_timed() -> None:
    ch = ModeChooser(("a", "b", "c"), samples=2, explore_every=4)
    picked = drive(ch, {"a": 2.0, "b": 1.5, "c": 1.0}, 9)
    assert picked == ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    assert ch.chosen == "c"
    picked = drive(ch, {"a": 2.0, "b": 1.5, "c": 1.0}, 60)
    assert ch.chosen == "c" and ch.switches == 0
    assert picked.count("a") >= 3 and picked.count("b") >= 3  # both re-timed
    assert picked.count("c") >= 25


def _runs_of(picked: list[str], mode: str) -> list[int]:
    """Lengths of the consecutive runs of ``mode`` in ``picked``."""
    out, n = [], 0
    for m in [*picked, ""]:
        if m == mode:
            n += 1
        elif n:
            out.append(n)
            n = 0
    return out


def test_a_mode_far_slower_is_re_timed_briefly_and_ever_less_often() -> None:
    ch = ModeChooser(("a", "b"), samples=3, explore_every=10)
    drive(ch, {"a": 1.0, "b": 15.0}, 8)
    assert ch.chosen == "a"
    picked = drive(ch, {"a": 1.0, "b": 15.0}, 400)
    bursts = _runs_of(picked, "b")
    assert bursts and all(n == 2 for n in bursts)  # one untimed run + one timed run that lost
    assert len(bursts) <= 6  # intervals 10, 20, 40, 80, 160 (capped at 160) instead of 40 re-timings
    # Once "b" is fast again, a re-timing finds it and it is chosen.
    drive(ch, {"a": 1.0, "b": 0.5}, 400)
    assert ch.chosen == "b"


def test_a_failed_run_of_the_other_mode_rules_it_out() -> None:
    ch = ModeChooser(("a", "b"), samples=2, explore_every=3)
    drive(ch, {"a": 1.0, "b": 1.0}, 3)
    assert ch.pick() == "b"
    ch.failed("b")
    assert drive(ch, {"a": 1.0, "b": 0.1}, 30) == ["a"] * 30
    ch.failed("a")  # the preferred mode failing is the net's own error: nothing changes
    assert ch.chosen == "a"


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="two or more different modes"):
        ModeChooser(("a", "a"))
    with pytest.raises(ValueError, match="unknown mode 'c'"):
        ModeChooser(("a", "b")).record("c", 1.0)


def test_concurrent_pair_finds_unordered_marked_chains() -> None:
    #   0 -> 1 -> 3, 0 -> 2 -> 3
    parents = [[], [0], [0], [1, 2]]
    assert concurrent_pair(parents, [False, True, True, False])
    assert not concurrent_pair(parents, [True, True, False, True])  # all on one path
    assert not concurrent_pair(parents, [False, False, True, False])
    # 0 -> 1 -> 2 -> 3 with a side branch 0 -> 4: marked 2 and 4 overlap, 1 and 3 do not.
    parents = [[], [0], [1], [2], [0]]
    assert concurrent_pair(parents, [False, False, True, False, True])
    assert not concurrent_pair(parents, [False, True, False, True, False])


def _wide(branches: int = 2, depth: int = 2, size: int = 96) -> tuple[Workspace, object]:
    rng = np.random.default_rng(0)
    ws = Workspace()
    ws.feed("x", rng.standard_normal((size, size)).astype(np.float32))
    ops = []
    for b in range(branches):
        src = "x"
        for d in range(depth):
            ws.feed(f"w{b}{d}", (rng.standard_normal((size, size)) / size).astype(np.float32))
            ops.append(op("MatMul", [src, f"w{b}{d}"], [f"m{b}{d}"]))
            src = f"m{b}{d}"
    ops.append(op("Sum", [f"m{b}{depth - 1}" for b in range(branches)], ["out"]))
    return ws, net(ops, name="wide")


def test_async_scheduling_times_every_mode_with_the_same_results(no_thread_leak: None) -> None:
    ws, nd = _wide()
    n = ws.create_net(nd, executor="async_scheduling")
    ex = n.executor
    assert isinstance(ex, AsyncSchedulingExecutor)
    ch = ex.mode_chooser
    if ch is None:
        pytest.skip("no pthreads OpenBLAS to govern in this numpy build")
    # Make every chain count as heavy (the net's GEMMs are small), so both modes really run.
    ex._cost = [1.0] * len(ex._cost)  # noqa: SLF001 - measured costs; a test sets them high
    seen = []
    ref = None
    for _ in range(14):
        seen.append(ch.pick())
        n.run()
        ex._sequential_runs = 0  # noqa: SLF001 - keep the cheap-net loop out of the way
        out = ws.fetch("out").copy()
        if ref is None:
            ref = out
        np.testing.assert_array_equal(out, ref)
    assert set(seen) == {"scheduled", "sequential", "one"}
    assert ch.chosen in ("scheduled", "sequential", "one")
    ws.close()


def test_modes_depend_on_the_net_and_fixed_blas_threads_turn_the_policy_off() -> None:
    ws, nd = _wide(branches=1)
    ch = ws.create_net(nd, executor="async_scheduling").executor.mode_chooser
    if ch is None:
        pytest.skip("no pthreads OpenBLAS to govern in this numpy build")
    assert ch.modes == ("scheduled", "one")  # no two heavy chains can overlap: no sequential mode
    ws3, nd3 = _wide()
    ch3 = ws3.create_net(nd3, executor="async_scheduling").executor.mode_chooser
    assert ch3 is not None and ch3.modes == ("scheduled", "sequential", "one")
    ws3.close()
    ws2, nd2 = _wide()
    n2 = ws2.create_net(nd2, executor="async_scheduling", options=ExecutorOptions(blas_threads=1))
    assert n2.executor.mode_chooser is None
    ws.close()
    ws2.close()


def _to_sequential(ch: ModeChooser) -> None:
    """Record fake runs until the chooser's next pick is the sequential mode."""
    while ch.pick() != "sequential":
        ch.record("scheduled", 1.0)


def test_failing_runs_of_other_modes_fall_back_to_scheduled_for_good(no_thread_leak: None) -> None:
    ws, nd = _wide()
    nd.op.append(op("ExecTestFail", ["out"], ["bad"]))
    n = ws.create_net(nd, executor="async_scheduling")
    ch = n.executor.mode_chooser
    if ch is None:
        pytest.skip("no pthreads OpenBLAS to govern in this numpy build")
    _to_sequential(ch)
    picked = []
    for _ in range(6):
        picked.append(ch.pick())
        with pytest.raises(OperatorError, match="boom"):
            n.run()
    # The failing sequential and one-thread modes ran once each and never again.
    assert picked == ["sequential", "one", "scheduled", "scheduled", "scheduled", "scheduled"]
    assert ch.chosen == "scheduled"
    ws.close()


def test_two_nets_in_sequential_mode_at_once_get_one_blas_thread_each(no_thread_leak: None) -> None:
    """A sequential run counts as one heavy run in the process-wide governor: two at once lower BLAS to 1."""
    from asyncnet.executors.blas import blas_governor

    if not blas_governor().active:
        pytest.skip("no pthreads OpenBLAS to govern in this numpy build")
    helpers.BLAS_SEEN.clear()
    runs = []
    for k in range(2):
        ws = Workspace()
        ws.feed("x", np.ones(2, np.float32))
        ops = [
            op("ExecTestBlasRendezvous", ["x"], [f"a{b}"], name=f"n{k}b{b}", key=f"seq-b{b}", parties=2)
            for b in range(2)
        ]
        n = ws.create_net(net(ops, name=f"seq{k}"), executor="async_scheduling")
        ch = n.executor.mode_chooser
        assert ch is not None
        _to_sequential(ch)
        runs.append((ws, n))
    helpers.BARRIERS.clear()
    errors: list[BaseException] = []

    def go(n: object) -> None:
        try:
            n.run()  # type: ignore[attr-defined]
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    ts = [threading.Thread(target=go, args=(n,)) for _, n in runs]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert not errors
    # Each net ran its two ops on its own thread, one after the other, meeting the other net's op.
    assert sorted(tag for tag, _ in helpers.BLAS_SEEN) == ["n0b0", "n0b1", "n1b0", "n1b1"]
    assert {threads for _, threads in helpers.BLAS_SEEN} == {1}
    assert blas_governor().running == 0
    for ws, _ in runs:
        ws.close()


def test_a_slowdown_of_the_chosen_mode_re_times_the_other_at_once() -> None:
    ch = ModeChooser(("a", "b"), samples=2, explore_every=1000, slowdown=1.5)
    drive(ch, {"a": 1.0, "b": 2.0}, 6)
    assert ch.chosen == "a"
    drive(ch, {"a": 1.4, "b": 2.0}, 10)  # slower, but within the factor: no re-timing
    assert ch.pick() == "a"
    picked = drive(ch, {"a": 3.0, "b": 2.0}, 6)
    # Two slow runs, then "b" re-timed (1 untimed + 2 timed) and chosen.
    assert picked[:5] == ["a", "a", "b", "b", "b"]
    assert ch.chosen == "b"


def test_mode_one_runs_every_op_with_one_blas_thread(no_thread_leak: None) -> None:
    from asyncnet.executors.blas import blas_governor

    if not blas_governor().active:
        pytest.skip("no pthreads OpenBLAS to govern in this numpy build")
    ws = Workspace()
    ws.feed("x", np.ones(2, np.float32))
    n = ws.create_net(net([op("ExecTestBlasRendezvous", ["x"], ["y"], name="probe")]), executor="async_scheduling")
    ch = n.executor.mode_chooser
    assert ch is not None
    while ch.pick() != "one":
        ch.record(ch.pick(), 1.0)
    helpers.BLAS_SEEN.clear()
    n.run()
    assert helpers.BLAS_SEEN == [("probe", 1)]
    assert blas_governor().running == 0
    ws.close()


def test_warmup_runs_at_the_start_are_not_timed() -> None:
    ch = ModeChooser(("a", "b"), samples=2, warmup=2)
    # A slow first and second run (cold buffers) must not count against "a".
    picked = []
    for cost in (50.0, 9.0, 1.0, 1.0):
        picked.append(ch.pick())
        ch.record(picked[-1], cost)
    picked += drive(ch, {"a": 1.0, "b": 1.2}, 3)
    assert picked == ["a"] * 4 + ["b"] * 3
    assert ch.chosen == "a"
