"""Stress the async_scheduling executor: random DAGs, injected failures, async ops, barriers, cancels.

Usage:
    .venv/bin/python bench/stress_executor.py [--runs 5000] [--seed 0] [--threads 4] [--hard-timeout 60]

Every run of a random net gets a random plan: some operators (sync or async)
raise an ``InjectedFailure``, and some runs are cancelled from another thread
after a random delay. Checked for every run:

* the set of injected failures that actually raised equals the set the run
  reports (``OperatorError`` plus its ``others``), and each one names the run it
  was raised in;
* a run with no failure and no cancel produces exactly the blob values of a
  sequential reference evaluation (so dependencies were respected);
* a cancel landing after its run ended does not affect the next run;
* no run hangs (``faulthandler`` aborts the process with stacks after
  ``--hard-timeout``); live thread count and RSS stay flat.

Exit status 1 on any violation.
"""

from __future__ import annotations

import argparse
import faulthandler
import gc
import os
import queue
import random
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from asyncnet.errors import OperatorError, RunCancelledError
from asyncnet.executors import ExecutorOptions
from asyncnet.net import Net
from asyncnet.opinfo import OpInfo
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import OpRegistry, default_registry
from asyncnet.schema import Arg
from asyncnet.serde import make_argument
from asyncnet.workspace import Workspace

MOD = 1_000_003


class InjectedFailure(RuntimeError):
    """The failure a stress op raises on purpose."""

    def __init__(self, run: int, op_id: int) -> None:
        super().__init__(f"injected failure of op {op_id} in run {run}")
        self.run = run
        self.op_id = op_id


class Plan:
    """What the current run should do; kernels read it when they run."""

    def __init__(self) -> None:
        self.run = 0
        self.fail: frozenset[int] = frozenset()
        self.raised: list[tuple[int, int]] = []
        self.lock = threading.Lock()

    def check(self, op_id: int) -> None:
        if op_id in self.fail:
            exc = InjectedFailure(self.run, op_id)
            with self.lock:
                self.raised.append((self.run, op_id))
            raise exc


class Completer:
    """One helper thread completing async ops' futures after tiny delays."""

    def __init__(self) -> None:
        self.q: queue.SimpleQueue[tuple[float, Future[Any], Callable[[], Any]] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._loop, name="stress-completer", daemon=True)
        self.thread.start()

    def submit(self, delay: float, fn: Callable[[], Any]) -> Future[Any]:
        fut: Future[Any] = Future()
        self.q.put((time.monotonic() + delay, fut, fn))
        return fut

    def _loop(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            due, fut, fn = item
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            # The executor may have cancelled a pending future after a failure or cancel.
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as e:  # noqa: BLE001 - handed to the executor through the future
                fut.set_exception(e)

    def close(self) -> None:
        self.q.put(None)
        self.thread.join(10)


def make_registry(plan: Plan, completer: Completer) -> OpRegistry:
    """A private registry: stress ops plus the real barrier and AsyncWait."""
    reg = OpRegistry()
    base = default_registry()
    for name in ("AsyncNetBarrier", "AsyncWait"):
        entry = base.kernel(name)
        reg.add_schema(base.schema(name))
        reg.add_kernel(name, entry.factory, is_async=entry.is_async)

    def value(op_id: int, xs: tuple[Any, ...]) -> int:
        return (sum(int(x) for x in xs) * 31 + op_id) % MOD

    @reg.op("StressOp", inputs=(0, -1), outputs=1, allow_inplace=True, args=(Arg("id", 0),))
    def stress_op(op: OpInfo) -> Callable[..., Any]:
        op_id = op.int_arg("id")

        def run(*xs: Any) -> tuple[int]:
            plan.check(op_id)
            return (value(op_id, xs),)

        return run

    @reg.op(
        "StressAsync", inputs=(0, -1), outputs=1, allow_inplace=True, args=(Arg("id", 0), Arg("us", 0)), is_async=True
    )
    def stress_async(op: OpInfo) -> Callable[..., Any]:
        op_id = op.int_arg("id")
        delay = op.int_arg("us") / 1e6

        def run(*xs: Any) -> Future[Any]:
            def finish() -> tuple[int]:
                plan.check(op_id)
                return (value(op_id, xs),)

            return completer.submit(delay, finish)

        return run

    return reg


def random_net(rng: random.Random, index: int) -> tuple[pb.NetDef, list[int]]:
    """A random DAG over a few blobs; returns the net and the ids of its failable ops."""
    net = pb.NetDef(name=f"stress_{index}", type="async_scheduling")
    blobs = ["in0", "in1"]
    net.external_input.extend(blobs)
    ids: list[int] = []
    for i in range(rng.randint(3, 24)):
        kind = rng.random()
        ins = rng.sample(blobs, k=min(len(blobs), rng.randint(1, 3)))
        if kind < 0.1:
            net.op.add(type="AsyncNetBarrier", input=ins, output=ins)
            continue
        if kind < 0.18:
            n = rng.randint(1, len(ins))
            op = net.op.add(type="AsyncWait", input=ins, output=ins[:n])
            op.arg.append(make_argument("ms", rng.choice([0.0, 0.05, 0.2, 1.0])))
            continue
        r = rng.random()
        out = rng.choice(ins) if r < 0.2 else (rng.choice(blobs) if r < 0.35 else f"b{i}")
        if out not in blobs:
            blobs.append(out)
        op_type = "StressAsync" if kind < 0.35 else "StressOp"
        op = net.op.add(type=op_type, input=ins, output=[out])
        op.arg.append(make_argument("id", i))
        if op_type == "StressAsync":
            op.arg.append(make_argument("us", rng.choice([0, 0, 50, 300])))
        ids.append(i)
    return net, ids


def reference(net: pb.NetDef, feeds: dict[str, int]) -> dict[str, int]:
    """Sequential evaluation of a stress net (simple-executor semantics)."""
    vals = dict(feeds)
    for op in net.op:
        xs = [vals[n] for n in op.input]
        if op.type in ("AsyncNetBarrier", "AsyncWait"):
            for o, x in zip(op.output, xs):
                vals[o] = x
        else:
            op_id = next(a.i for a in op.arg if a.name == "id")
            vals[op.output[0]] = (sum(xs) * 31 + op_id) % MOD
    return vals


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass
class StressReport:
    runs: int = 0
    nets: int = 0
    ok_runs: int = 0
    failures_injected: int = 0
    failures_reported: int = 0
    failed_runs: int = 0
    cancels_sent: int = 0
    cancelled_runs: int = 0
    late_cancels: int = 0
    violations: list[str] = field(default_factory=list)
    threads: list[int] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"runs {self.runs} on {self.nets} nets in {self.seconds:.1f} s: ok {self.ok_runs}, "
            f"failed {self.failed_runs}, cancelled {self.cancelled_runs}; failures injected "
            f"{self.failures_injected}, reported {self.failures_reported}; cancels sent {self.cancels_sent} "
            f"({self.late_cancels} after the run ended); threads min/max {min(self.threads, default=0)}/"
            f"{max(self.threads, default=0)}; RSS first/last {self.rss[0] / 2**20 if self.rss else 0:.1f}/"
            f"{self.rss[-1] / 2**20 if self.rss else 0:.1f} MiB; violations {len(self.violations)}"
        )


class Canceller:
    """A long-lived thread that cancels a net after a delay, on request."""

    def __init__(self) -> None:
        self.q: queue.SimpleQueue[tuple[Net, float, threading.Event] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._loop, name="stress-canceller", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            net, delay, done = item
            time.sleep(delay)
            net.cancel()
            done.set()

    def close(self) -> None:
        self.q.put(None)
        self.thread.join(10)


def stress(
    runs: int,
    seed: int = 0,
    *,
    runs_per_net: int = 25,
    threads: int = 4,
    fail_rate: float = 0.3,
    cancel_rate: float = 0.15,
    hard_timeout: float | None = 30.0,
    watchdog: bool = False,
) -> StressReport:
    """Run ``runs`` stress runs; the report lists every violated expectation."""
    rng = random.Random(seed)
    plan = Plan()
    completer = Completer()
    canceller = Canceller()
    reg = make_registry(plan, completer)
    report = StressReport()
    t0 = time.perf_counter()
    run_no = 0
    try:
        while report.runs < runs:
            net_def, ids = random_net(rng, report.nets)
            report.nets += 1
            ws = Workspace()
            feeds = {"in0": rng.randrange(MOD), "in1": rng.randrange(MOD)}
            # Every other net owns its pools: closing it must join their threads.
            options = ExecutorOptions(threads=threads, shared_pools=report.nets % 2 == 0)
            net = Net(net_def, ws, executor="async_scheduling", options=options, registry=reg)
            expected = reference(net_def, feeds)
            try:
                for _ in range(min(runs_per_net, runs - report.runs)):
                    run_no += 1
                    if watchdog:
                        # A run that ignores its own timeout is a hang: dump every stack and exit.
                        faulthandler.dump_traceback_later((hard_timeout or 60.0) + 10, exit=True)
                    _one_run(
                        rng,
                        run_no,
                        net,
                        ws,
                        feeds,
                        expected,
                        ids,
                        plan,
                        canceller,
                        report,
                        fail_rate,
                        cancel_rate,
                        hard_timeout,
                    )
            finally:
                net.close()
            report.threads.append(threading.active_count())
            if report.nets % 10 == 0:
                gc.collect()
                report.rss.append(rss_bytes())
    finally:
        completer.close()
        canceller.close()
    report.seconds = time.perf_counter() - t0
    return report


def _one_run(
    rng: random.Random,
    run_no: int,
    net: Net,
    ws: Workspace,
    feeds: dict[str, int],
    expected: dict[str, int],
    ids: list[int],
    plan: Plan,
    canceller: Canceller,
    report: StressReport,
    fail_rate: float,
    cancel_rate: float,
    hard_timeout: float | None,
) -> None:
    for k, v in feeds.items():
        ws.feed(k, v)
    plan.run = run_no
    plan.fail = frozenset(i for i in ids if rng.random() < fail_rate / max(len(ids), 1) * 2)
    plan.raised = []
    cancel = rng.random() < cancel_rate
    done = threading.Event()
    if cancel:
        report.cancels_sent += 1
        canceller.q.put((net, rng.choice([0.0, 0.0001, 0.0005, 0.002]), done))
    report.runs += 1
    outcome: BaseException | None = None
    try:
        net.run(timeout=hard_timeout)
    except (OperatorError, RunCancelledError) as e:
        outcome = e
    except Exception as e:  # noqa: BLE001 - anything else is a violation to report
        report.violations.append(f"run {run_no}: unexpected {type(e).__name__}: {e}")
        outcome = e
    if cancel:
        done.wait(10)
        if not isinstance(outcome, RunCancelledError):
            report.late_cancels += 1
    raised = set(plan.raised)
    report.failures_injected += len(raised)
    if isinstance(outcome, OperatorError):
        report.failed_runs += 1
        errs = [outcome, *outcome.others]
        reported = set()
        for err in errs:
            cause = err.cause
            if not isinstance(cause, InjectedFailure):
                report.violations.append(f"run {run_no}: failure not injected: {err}")
                continue
            if cause.run != run_no:
                report.violations.append(f"run {run_no}: reports a failure of run {cause.run}")
            reported.add((cause.run, cause.op_id))
        report.failures_reported += len(reported)
        if reported != raised:
            report.violations.append(
                f"run {run_no}: raised {sorted(raised)} but reported {sorted(reported)} ({net.name})"
            )
    elif raised:
        report.violations.append(f"run {run_no}: failures {sorted(raised)} raised but run ended with {outcome!r}")
    elif isinstance(outcome, RunCancelledError):
        report.cancelled_runs += 1
        if not cancel:
            report.violations.append(f"run {run_no}: cancelled without a cancel: {outcome}")
    elif outcome is None:
        report.ok_runs += 1
        got = {n: ws.fetch(n) for n in expected}
        if got != expected:
            bad = sorted(n for n in expected if got[n] != expected[n])
            report.violations.append(f"run {run_no}: wrong values for {bad} ({net.name})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument(
        "--hard-timeout",
        type=float,
        default=60.0,
        help="per-run timeout in seconds, also the watchdog (stacks + exit) limit; 0: no run timeout, 60 s watchdog",
    )
    args = ap.parse_args(argv)
    rss0 = rss_bytes()
    threads0 = threading.active_count()
    timeout = args.hard_timeout if args.hard_timeout > 0 else None
    report = stress(args.runs, args.seed, threads=args.threads, hard_timeout=timeout, watchdog=True)
    faulthandler.cancel_dump_traceback_later()
    sys.stdout.write(report.summary() + "\n")
    sys.stdout.write(
        f"process RSS before {rss0 / 2**20:.1f} MiB, after {rss_bytes() / 2**20:.1f} MiB; "
        f"threads before {threads0}, after {threading.active_count()}\n"
    )
    for v in report.violations[:20]:
        sys.stdout.write(f"  VIOLATION {v}\n")
    return 1 if report.violations else 0


if __name__ == "__main__":
    raise SystemExit(main())
