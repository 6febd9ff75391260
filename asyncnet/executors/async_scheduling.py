"""The async_scheduling executor: a net as a DAG of chains run concurrently.

Each chain (see :mod:`asyncnet.graph`) is a task with a count of unfinished parent
chains; when the count reaches zero the task is ready. Ready tasks are run by:

* the thread that made them ready (it keeps one expensive child for itself and
  runs *cheap* children inline: a measured chain time below the hand-off cost),
* the calling thread, which works on the run instead of only waiting,
* the worker pool of the chain's device, woken only when there is queued work
  and fewer drainers than workers.

When every chain measured cheaper than a hand-off (so all would run inline anyway), the next
runs skip the scheduling: a plain loop over the ops in NetDef order on the calling thread, as
the simple executor runs them, with one scheduled run every ``SEQUENTIAL_RUNS`` to measure again.

An async op (kernel returns a Future) ends its chain; it holds no thread while
pending and its children are released by the future's completion callback.

A chain holding BLAS-heavy ops (Conv, FC, MatMul, ...) runs inside the process-wide
:class:`~asyncnet.executors.blas.BlasGovernor`: alone it gets every BLAS thread, with
another one running both get one (unless ``ExecutorOptions.blas_threads`` fixes the count).
Whether that beats one BLAS thread for the whole run, or (where two heavy chains can overlap)
the plain loop with every BLAS thread, depends on the machine and its load, so a net with
heavy ops times these modes and keeps the fastest (:mod:`asyncnet.executors.mode_choice`).

The first failure (or a cancel / timeout) stops scheduling; running chains stop
at their next op boundary; pending async futures are cancelled; ``run`` returns
only when nothing of the run is still executing.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from concurrent.futures import Future
from typing import Any

from asyncnet.cancellation import RunScope, current_scope, enter_scope, has_subnets
from asyncnet.errors import ExecutorError, NetBusyError, RunCancelledError
from asyncnet.executors._run_state import RunState
from asyncnet.executors._sequential import SequentialRun, run_sequential
from asyncnet.executors.base import Executor, ExecutorOptions, register_executor
from asyncnet.executors.blas import BlasGovernor, blas_governor, is_blas_op
from asyncnet.executors.mode_choice import WARMUP_RUNS, ModeChooser
from asyncnet.executors.pools import (
    WorkerPool,
    blas_limit,
    check_blas_limit,
    clamp_threads,
    default_threads,
    pool_device,
    private_pool,
    shared_pool,
    shared_timer,
)
from asyncnet.graph import OpNode, build_graph
from asyncnet.net import Net, PreparedOp
from asyncnet.opinfo import DeviceKey
from asyncnet.profiling import Profiler

log = logging.getLogger(__name__)

# A chain measured faster than this runs inline on the thread that made it ready:
# waking a worker on the other core costs ~20-25 us each way.
DEFAULT_INLINE_SECONDS = 50e-6
# However slow hand-offs get (a loaded machine measures milliseconds of wake-up latency), a chain
# this long is worth a second core. Without the cap one bad estimate made every chain "cheap"; with
# nothing handed off the estimate was never corrected and the executor stayed sequential.
MAX_INLINE_SECONDS = 1e-3
# BLAS-heavy chains measured faster than this skip the BLAS governor (about 1 us per chain): their
# GEMMs are too small for OpenBLAS to thread, or too short for the thread count to matter.
GOVERNED_SECONDS = 100e-6
# When every chain measured cheaper than a hand-off, nothing would leave the calling thread: the
# next runs are then plain loops over the ops in NetDef order (no per-chain bookkeeping), and
# every this-many runs one scheduled run measures the chains again.
SEQUENTIAL_RUNS = 32


@register_executor
class AsyncSchedulingExecutor(Executor):
    """Runs independent chains of a net concurrently on per-device worker pools."""

    name = "async_scheduling"

    def __init__(self, net: Net, options: ExecutorOptions) -> None:
        super().__init__(net, options)
        ops = net.ops
        nodes = [OpNode(i.inputs, i.outputs, i.control_inputs, i.device, i.label()) for i in net.infos]
        self.graph = build_graph(nodes, chain_breaks=[k for k, op in enumerate(ops) if op.is_async])
        g = self.graph
        self._chain_ops: list[tuple[PreparedOp, ...]] = [tuple(ops[k] for k in c) for c in g.chains]
        self._children = [tuple(c) for c in g.chain_children]
        self._nparents = [len(p) for p in g.chain_parents]
        self._roots = g.roots()
        self._device = [net.infos[c[0]].device for c in g.chains]
        self._devices = sorted(set(self._device), key=lambda d: (d.type, d.id, d.numa))
        self._ends_async = [ops[c[-1]].is_async for c in g.chains]
        self._cost = [math.inf] * len(g.chains)
        # BLAS-heavy chains tell the process-wide governor when they run (see executors/blas.py),
        # unless the user fixed the BLAS threads for the whole run.
        heavy = [any(is_blas_op(net.infos[k].type) for k in c) for c in g.chains]
        self._gov: BlasGovernor | None = None
        if options.blas_threads is None and any(heavy):
            gov = blas_governor()
            self._gov = gov if gov.active else None
        self._heavy = heavy if self._gov is not None else [False] * len(heavy)
        # How BLAS-heavy chains should share the cores -- concurrent chains with one BLAS thread each
        # while two run (the governor), one BLAS thread for the whole run, or (where two heavy chains
        # could overlap) every op in order with every BLAS thread -- depends on the machine and its
        # load: each is timed and the fastest kept (executors/mode_choice.py).
        self._chooser: ModeChooser | None = None
        if self._gov is not None and not options.profile and not any(ops[c[-1]].is_async for c in g.chains):
            modes = ["scheduled", "one"]
            if concurrent_pair(g.chain_parents, heavy):
                modes.insert(1, "sequential")
            self._chooser = ModeChooser(modes, warmup=WARMUP_RUNS)
        # Caffe2 read the deprecated NetDef.num_workers field, or the newer `num_workers` net argument.
        arg_workers = net.args.get("num_workers")
        num_workers = net.net_def.num_workers if net.net_def.HasField("num_workers") else 0
        if not num_workers and isinstance(arg_workers, int) and not isinstance(arg_workers, bool):
            num_workers = arg_workers
        threads = num_workers if num_workers > 0 else (options.threads or default_threads())
        if threads < 1:
            raise ExecutorError(f"net '{net.name}': executor threads must be at least 1, got {threads}")
        self.threads = clamp_threads(threads, f"net '{net.name}'")
        self.inline_seconds = DEFAULT_INLINE_SECONDS
        self._handoff = DEFAULT_INLINE_SECONDS / 2
        self._inline_limit = DEFAULT_INLINE_SECONDS
        # The calling thread works on the run too: on its own device (cpu:0) at most threads - 1
        # pool workers join it, so a run keeps ``threads`` busy, not threads + 1 on threads cores.
        self._cap = {d: (self.threads - 1 if d == DeviceKey() else self.threads) for d in self._devices}
        self._pools: dict[DeviceKey, WorkerPool] = {}
        self._own_pools: dict[DeviceKey, WorkerPool] = {}  # private pools by pool key (see pools.py bounds)
        self._pool_lock = threading.Lock()
        self._busy = threading.Lock()
        self._current: RunState | None = None
        self._sequential: SequentialRun | None = None
        self._sequential_runs = 0  # runs left on the sequential path before measuring again
        self._closed = False
        self._nested = has_subnets(net)
        self.profiler: Profiler | None = Profiler() if options.profile else None
        check_blas_limit(options.blas_threads)

    # -- pools -----------------------------------------------------------------

    def _pool(self, device: DeviceKey) -> WorkerPool:
        pool = self._pools.get(device)
        if pool is None:
            with self._pool_lock:
                if self._closed:
                    raise ExecutorError(f"net '{self.net.name}': executor is closed")
                pool = self._pools.get(device)
                if pool is None:
                    if self.options.shared_pools:
                        pool = shared_pool(device, self.threads)
                    else:
                        key = pool_device(device, self._own_pools)
                        pool = self._own_pools.get(key)
                        if pool is None:
                            pool = private_pool(key, self.threads, self.net.name)
                            self._own_pools[key] = pool
                    self._pools[device] = pool
        return pool

    def close(self) -> None:
        with self._pool_lock:
            self._closed = True
            pools = list(self._own_pools.values())
            self._pools.clear()
            self._own_pools.clear()
        for p in pools:
            p.close()

    # -- running -----------------------------------------------------------------

    def run(self, *, timeout: float | None = None) -> None:
        if not self._busy.acquire(blocking=False):
            raise NetBusyError(f"net '{self.net.name}' is already running; runs of one net cannot overlap")
        try:
            if self._closed:
                raise ExecutorError(f"net '{self.net.name}': executor is closed")
            if not self._chain_ops:
                return
            if self._sequential_runs > 0:
                self._sequential_runs -= 1
                self._run_sequential(timeout)
                return
            chooser = self._chooser
            mode = chooser.pick() if chooser is not None else "scheduled"
            if mode == "sequential":
                assert chooser is not None and self._gov is not None
                t0 = time.perf_counter()
                self._gov.enter()  # one heavy run: a concurrent heavy chain elsewhere gets one thread each
                try:
                    self._run_sequential(timeout)
                except BaseException:
                    chooser.failed(mode)
                    raise
                finally:
                    self._gov.exit()
                chooser.record(mode, time.perf_counter() - t0)
                return
            run = RunState(list(self._nparents), self._devices)
            self._current = run
            prev_scope = None
            if self._nested:
                run.scope = RunScope(self.net.name, current_scope())
                prev_scope = enter_scope(run.scope)
                if run.scope.stopped():  # the run above stopped before this one was reachable
                    self._stop(run, "cancel")
            timer = None
            if timeout is not None:
                timer = shared_timer().call_later(max(timeout, 0.0), lambda: self._stop(run, "timeout"))
            t0 = time.perf_counter()
            try:
                try:
                    if mode == "one":
                        assert self._gov is not None
                        with self._gov.single_threaded():
                            self._drive(run)
                    else:
                        with blas_limit(self.options.blas_threads):
                            self._drive(run)
                except BaseException:
                    # KeyboardInterrupt and the like: stop, let running chains end, then propagate.
                    self._stop(run, "cancel")
                    with run.cond:
                        while not run.finished:
                            run.cond.wait()
                    raise
            finally:
                if timer is not None:
                    shared_timer().cancel(timer)
                if run.scope is not None:
                    enter_scope(prev_scope)
                self._current = None
            t1 = time.perf_counter()
            if self.profiler is not None:
                self.profiler.run(t0, t1)
            if chooser is not None and run.errors:
                chooser.failed(mode)
            run.raise_outcome(self.net.name, timeout)
            if chooser is not None:
                chooser.record(mode, t1 - t0)
            if self.profiler is None and not any(self._ends_async):
                limit = self._inline_limit
                if all(c < limit for c in self._cost):
                    self._sequential_runs = SEQUENTIAL_RUNS
        finally:
            self._busy.release()

    @property
    def mode_chooser(self) -> ModeChooser | None:
        """The measured BLAS policy of this net (None when it has no BLAS-heavy op or BLAS is fixed)."""
        return self._chooser

    @property
    def blas_policy_settled(self) -> bool:
        """Whether the measured BLAS policy has chosen (or has nothing to choose: no policy, or the net
        runs as a plain loop because every chain measured cheaper than a hand-off)."""
        ch = self._chooser
        return ch is None or ch.chosen is not None or self._sequential_runs > 0

    def _run_sequential(self, timeout: float | None) -> None:
        """Every op in NetDef order on this thread: what a run does when all chains measured cheap."""
        state = SequentialRun(RunScope(self.net.name, current_scope()) if self._nested else None)
        self._sequential = state
        prev = enter_scope(state.scope) if state.scope is not None else None
        try:
            if state.scope is not None and state.scope.stopped():
                state.stop = "cancel"
            run_sequential(self.net, state, timeout=timeout, blas_threads=self.options.blas_threads)
        finally:
            if state.scope is not None:
                enter_scope(prev)
            self._sequential = None

    def cancel(self) -> None:
        seq = self._sequential
        if seq is not None:
            seq.set_stop("cancel")
        run = self._current
        if run is not None:
            self._stop(run, "cancel")

    def _drive(self, run: RunState) -> None:
        """The calling thread: start the roots, work while there is work, wait for the end."""
        with run.cond:
            run.active = len(self._roots)
        local: list[int] = []
        self._place(run, list(self._roots), local)
        if local:
            self._work(run, local, None)
        cond = run.cond
        while True:
            with cond:
                item = -1
                while not run.finished:
                    if run.stop:
                        run.drop_queued(self._gov)
                        if run.finished:
                            break
                    else:
                        for q in run.queues.values():
                            if q:
                                item = q.popleft()
                                break
                        if item >= 0:
                            break
                    run.caller_idle = True
                    cond.wait()
                    run.caller_idle = False
                if item < 0:
                    return
            self._work(run, [item], None)

    def _stop(self, run: RunState, reason: str) -> None:
        with run.cond:
            if run.finished:
                return
            if not run.stop:
                run.stop = True
                run.reason = reason
            futures = list(run.futures)
            run.drop_queued(self._gov)
            run.cond.notify_all()
        for f in futures:
            f.cancel()  # its done callback releases the chain
        if run.scope is not None:
            run.scope.stop(run.reason)  # subnets running under this run stop too

    def _place(self, run: RunState, ready: list[int], local: list[int] | None) -> None:
        """Route newly ready chains: cheap ones (and one expensive) to ``local``, the rest to queues."""
        cost = self._cost
        limit = self._inline_limit
        push: list[int] = []
        keep_one = local is not None and not local
        for c in ready:
            if local is not None and cost[c] < limit:
                local.append(c)
            elif keep_one:
                assert local is not None
                local.append(c)
                keep_one = False
            else:
                push.append(c)
        if push:
            self._push(run, push)

    def _push(self, run: RunState, items: list[int]) -> None:
        device = self._device
        with run.cond:
            if run.stop:
                run.active -= len(items)
                if run.active == 0:
                    run.finished = True
                    run.cond.notify_all()
                return
            fresh: dict[DeviceKey, int] = {}
            for c in items:
                d = device[c]
                run.queues[d].append(c)
                fresh[d] = fresh.get(d, 0) + 1
            woken = 0
            if run.caller_idle:
                run.caller_idle = False  # one wake-up is enough; the caller takes one item
                run.cond.notify()
                d0 = device[items[0]]
                fresh[d0] -= 1
                woken += 1
            for d, n in fresh.items():
                pool = None
                cap = self._cap[d]
                while n > 0 and run.drainers[d] < cap:
                    if pool is None:
                        pool = self._pool(d)
                    run.drainers[d] += 1
                    pool.submit(functools.partial(self._drain, run, d, time.perf_counter()))
                    n -= 1
                    woken += 1
            if woken and self._gov is not None:
                # As many BLAS-heavy chains as threads were woken will run beside this thread: enter
                # the governor for them now, so that what this thread runs next already gets one BLAS
                # thread (no wake-up window in which its GEMM starts multi-threaded and then shares
                # the cores). Whoever runs a held chain uses the slot; a dropped one releases it.
                heavy, cost, held = self._heavy, self._cost, run.held
                for c in items:
                    if heavy[c] and cost[c] >= GOVERNED_SECONDS:
                        held[c] = 1
                        self._gov.enter()
                        woken -= 1
                        if not woken:
                            break

    def _drain(self, run: RunState, device: DeviceKey, submitted: float) -> None:
        """A pool task: run queued chains of ``device`` until the queue is empty."""
        # Hand-off latency (submit to start) sets what counts as a cheap chain: on a loaded
        # machine waking a worker costs more, so more chains are better run inline.
        latency = time.perf_counter() - submitted
        self._handoff += 0.2 * (latency - self._handoff)
        self._inline_limit = min(max(self.inline_seconds, 2.0 * self._handoff), MAX_INLINE_SECONDS)
        q = run.queues[device]
        prev = enter_scope(run.scope) if run.scope is not None else None
        try:
            while True:
                with run.cond:
                    if not q or run.stop:
                        run.drainers[device] -= 1
                        if run.stop:
                            run.drop_queued(self._gov)
                        return
                    item = q.popleft()
                self._work(run, [item], device)
        finally:
            if run.scope is not None:
                enter_scope(prev)

    def _work(self, run: RunState, local: list[int], device: DeviceKey | None) -> None:
        """Run ``local`` chains and whatever they make ready that this thread keeps."""
        slot = False  # this thread holds a BLAS governor slot (only while ``local`` is not empty)
        while local:
            c = local.pop()
            ready, slot = self._exec(run, c, slot, local, device)
            if ready:
                self._place(run, ready, local)

    def _release(self, c: int) -> None:
        gov = self._gov
        assert gov is not None
        gov.exit()

    def _governed(self, run: RunState, c: int) -> bool:
        return bool(run.held[c]) or (self._heavy[c] and self._cost[c] >= GOVERNED_SECONDS)

    def _exec(
        self, run: RunState, c: int, slot: bool, local: list[int], device: DeviceKey | None
    ) -> tuple[list[int], bool]:
        """Run chain ``c``; returns the chains it made ready (already counted active) and ``slot``.

        ``slot``: whether this thread holds a BLAS governor slot, before and after. A BLAS-heavy
        chain runs holding one. After it the slot is kept only for a heavy chain this thread runs
        next (the top of ``local``, or one it takes from the queue now): leaving and re-entering
        between two chains would restore the full count for a moment, and GEMMs that other threads
        start then would run multi-threaded. Otherwise the slot is left before the children are
        released, so that a child never sees its parent still counted.
        """
        gov = self._gov
        if run.held[c]:  # set under run.cond as ``c`` was queued: visible to whoever popped it
            run.held[c] = 0
            if slot:
                self._release(c)  # the chain brought its own slot
            slot = True
        elif self._heavy[c] and self._cost[c] >= GOVERNED_SECONDS:
            if not slot:
                assert gov is not None
                gov.enter()
                slot = True
        elif slot:
            self._release(c)
            slot = False
        try:
            ok = self._run_chain(run, c)
        except BaseException:
            if slot:
                self._release(c)
            run.finish(self._children[c], False)
            raise
        if slot and not self._next_governed(run, local, device):
            self._release(c)
            slot = False
        # None: the chain ended in a started async op, whose completion callback finishes it.
        return ([] if ok is None else run.finish(self._children[c], ok)), slot

    def _next_governed(self, run: RunState, local: list[int], device: DeviceKey | None) -> bool:
        """Whether this thread runs a governed chain next: the top of ``local``, or the head of its queue
        (taken into ``local`` now, so that the run cannot end before this thread has run it)."""
        if local:
            return self._governed(run, local[-1])
        with run.cond:
            if run.stop:
                return False
            for d, q in run.queues.items():
                if q and (device is None or d == device):
                    if not self._governed(run, q[0]):
                        return False
                    local.append(q.popleft())
                    return True
        return False

    def _run_chain(self, run: RunState, c: int) -> bool | None:
        """The ops of chain ``c``: True if all ran, False if stopped or failed, None if an async op is pending."""
        ops = self._chain_ops[c]
        if run.stop:
            return False
        prof = self.profiler
        op: PreparedOp | None = None
        t0 = time.perf_counter()
        try:
            if prof is None:
                for op in ops[:-1] if self._ends_async[c] else ops:
                    if run.stop:
                        return False
                    op.step()
            else:
                for op in ops[:-1] if self._ends_async[c] else ops:
                    if run.stop:
                        return False
                    s = time.perf_counter()
                    op.step()
                    prof.op(op.index, s, time.perf_counter())
            if self._ends_async[c]:
                op = ops[-1]
                if run.stop:
                    return False
                started = time.perf_counter()
                fut = op.start()
                assert fut is not None
                self._cost[c] = time.perf_counter() - t0
                with run.cond:
                    run.futures.add(fut)
                fut.add_done_callback(lambda f: self._async_done(run, c, op, f, started))  # type: ignore[arg-type]
                return None
        except RunCancelledError as e:
            assert op is not None
            if run.stop or (run.scope is not None and run.scope.stopped()):
                # A subnet stopped because this run (or one above) did: a stop, not a failure.
                run.stopped_in = op.info.label()
                self._stop(run, "cancel")
                return False
            self._fail(run, op, e)
            return False
        except Exception as e:
            assert op is not None
            self._fail(run, op, e)
            return False
        except BaseException:
            self._stop(run, "cancel")  # KeyboardInterrupt and the like; _exec finishes the chain
            raise
        elapsed = time.perf_counter() - t0
        # Wall time includes waits for the GIL held by other threads, so noise is upward: follow a
        # smaller measurement at once, a larger one slowly (a chain that really grew still gets there).
        old = self._cost[c]
        self._cost[c] = elapsed if elapsed < old else old + 0.25 * (elapsed - old)
        return True

    def _async_done(self, run: RunState, c: int, op: PreparedOp, fut: Future[Any], started: float) -> None:
        """Completion callback of an async op (on whatever thread completed the future)."""
        with run.cond:
            run.futures.discard(fut)
        ok = False
        if not fut.cancelled():
            exc = fut.exception()
            if exc is not None:
                self._fail(run, op, exc)
            else:
                try:
                    op.store(fut.result())
                    ok = True
                except Exception as e:
                    self._fail(run, op, e)
        if ok and self.profiler is not None:
            self.profiler.op(op.index, started, time.perf_counter())
        ready = run.finish(self._children[c], ok)
        if ready:
            # Never run children on a timer or I/O thread: hand them to the pools / caller.
            self._push(run, ready)

    def _fail(self, run: RunState, op: PreparedOp, exc: BaseException) -> None:
        err = op.error(exc)
        err.__cause__ = exc
        with run.cond:
            run.errors.append(err)
        log.debug("%s failed in net '%s': %r", op.info.label(), self.net.name, exc)
        self._stop(run, "error")


def concurrent_pair(parents: tuple[tuple[int, ...], ...] | list[list[int]], marked: list[bool]) -> bool:
    """Whether two marked chains can run at the same time (neither is an ancestor of the other)."""
    n = len(parents)
    children: list[list[int]] = [[] for _ in range(n)]
    for c, ps in enumerate(parents):
        for p in ps:
            children[p].append(c)
    pending = [len(ps) for ps in parents]
    order = [c for c in range(n) if not pending[c]]
    for c in order:  # Kahn's order: grows while iterating
        for k in children[c]:
            pending[k] -= 1
            if not pending[k]:
                order.append(k)
    # Bitsets of marked ancestors, in topological order; a marked chain whose marked ancestors are
    # not all marked chains seen before it can overlap one of them (or one in another branch).
    anc = [0] * n
    seen = 0
    for c in order:
        a = 0
        for p in parents[c]:
            a |= anc[p] | ((1 << p) if marked[p] else 0)
        anc[c] = a
        if marked[c]:
            if a != seen:
                return True
            seen |= 1 << c
    return False
