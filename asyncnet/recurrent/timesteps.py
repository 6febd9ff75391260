"""The threaded timestep executor: the ops of every timestep as one dependency graph.

Caffe2's RNN executor ran an op of timestep t as soon as the ops it depends on had run,
whatever their timestep: with a 2-layer LSTM, layer 2 at step t runs beside layer 1 at step
t+1. Here every (timestep, op) pair of the unrolled step net is a :class:`Task` naming the keys
it reads and writes: step-local blobs are keyed by their timestep, linked blobs by the rows of
the external tensor they view, shared blobs (parameters) by name. Read-after-write,
write-after-write and write-after-read edges in sequential order make any schedule compute
exactly what running the timesteps in order computes (bitwise: each op sees the same values).

Scheduling: the calling thread works through ready tasks; helpers from the shared device pool
join when more than one task is ready and stay (waiting on the run's condition, not spinning)
until the run ends. The caller never waits for a helper to start, so a recurrent op run from a
pool worker never waits for that pool. The first failure stops new tasks; running ones finish.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from asyncnet.cancellation import current_scope, enter_scope
from asyncnet.errors import OperatorError
from asyncnet.executors.blas import blas_governor
from asyncnet.executors.pools import shared_pool
from asyncnet.net import PreparedOp
from asyncnet.opinfo import DeviceKey

__all__ = ["Task", "dependencies", "one_blas_thread", "run_tasks"]


@dataclass
class Task:
    """One unit of the unrolled recurrence: an op of one timestep (plus its link copy-backs)."""

    run: Callable[[], None]
    reads: Sequence[Hashable]
    writes: Sequence[Hashable]
    op: PreparedOp | None = None
    timestep: int = -1
    label: str = field(default="")


def dependencies(tasks: Sequence[Task]) -> tuple[list[list[int]], list[int]]:
    """(children per task, parent count per task) from the tasks' keys, in sequential order."""
    last_writer: dict[Hashable, int] = {}
    readers: dict[Hashable, list[int]] = {}
    parents: list[set[int]] = []
    for i, task in enumerate(tasks):
        ps: set[int] = set()
        for k in task.reads:
            w = last_writer.get(k)
            if w is not None:
                ps.add(w)
            readers.setdefault(k, []).append(i)
        for k in task.writes:
            w = last_writer.get(k)
            if w is not None:
                ps.add(w)
            for r in readers.get(k, ()):
                if r != i:
                    ps.add(r)
            readers[k] = []
            last_writer[k] = i
        ps.discard(i)
        parents.append(ps)
    children: list[list[int]] = [[] for _ in tasks]
    for i, ps in enumerate(parents):
        for p in ps:
            children[p].append(i)
    return children, [len(ps) for ps in parents]


def one_blas_thread() -> contextlib.AbstractContextManager[Any]:
    """One BLAS thread for the duration, through the executors' process-wide BLAS governor (so the
    count is restored correctly even while nets run BLAS-heavy chains at the same time)."""
    gov = blas_governor()
    return gov.single_threaded() if gov.active else contextlib.nullcontext()


class _Run:
    __slots__ = ("cond", "counts", "ready", "done", "active", "stop", "error", "helpers", "waiting")

    def __init__(self, counts: list[int]) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.counts = counts
        self.ready: deque[int] = deque(i for i, c in enumerate(counts) if c == 0)
        self.done = 0
        self.active = 0
        self.stop = False
        self.error: tuple[Task, BaseException] | None = None
        self.helpers = 0
        self.waiting = 0


def run_tasks(
    tasks: Sequence[Task],
    graph: tuple[list[list[int]], list[int]],
    *,
    threads: int,
    owner: str,
) -> None:
    """Run ``tasks`` respecting ``graph`` (from :func:`dependencies`) on up to ``threads`` threads.

    Raises the first failing op's OperatorError (naming the inner op and its timestep).
    """
    children, nparents = graph
    n = len(tasks)
    if n == 0:
        return
    run = _Run(list(nparents))
    # The outer run's scope: its cancel / timeout stops this run at the next task boundary.
    scope = current_scope()
    stopped_at: list[int] = []
    max_helpers = max(threads - 1, 0)
    pool = shared_pool(DeviceKey(), threads) if max_helpers else None

    def finished() -> bool:
        return run.done == n or (run.stop and run.active == 0)

    def maybe_help() -> None:
        # Lock held. One more helper while work is queued beyond what running threads take.
        if pool is not None and run.helpers < max_helpers and len(run.ready) > 0 and not run.stop:
            run.helpers += 1
            pool.submit(lambda: work(False))

    def work(caller: bool) -> None:
        prev = enter_scope(scope) if not caller else None  # a step op may itself run a subnet
        try:
            work_loop(caller)
        finally:
            if not caller:
                enter_scope(prev)

    def work_loop(caller: bool) -> None:
        cond = run.cond
        while True:
            with cond:
                while not run.ready or run.stop:
                    if finished():
                        if not caller:
                            run.helpers -= 1
                        return
                    # Helpers stay for the run (no busy wait): re-submitting one to the pool for every
                    # burst of ready tasks would pay a wake-up each time, milliseconds on a loaded machine.
                    run.waiting += 1
                    cond.wait()
                    run.waiting -= 1
                i = run.ready.popleft()
                if scope is not None and scope.stopped():
                    run.stop = True
                    stopped_at.append(i)
                    if finished():
                        cond.notify_all()
                    continue
                run.active += 1
                maybe_help()
            task = tasks[i]
            ok = True
            try:
                task.run()
            except Exception as e:
                ok = False
                with cond:
                    if run.error is None:
                        run.error = (task, e)
                    run.stop = True
            with cond:
                run.active -= 1
                if ok:
                    run.done += 1
                    if not run.stop:
                        counts = run.counts
                        for c in children[i]:
                            counts[c] -= 1
                            if counts[c] == 0:
                                run.ready.append(c)
                        maybe_help()
                if run.waiting and (run.ready or finished()):
                    cond.notify_all()

    # The caller returns only when every started task has ended. A helper still queued on a busy
    # pool is not waited for (that could deadlock under a parent holding the pool): when it starts
    # it finds the run finished and leaves at once.
    with one_blas_thread() if max_helpers else contextlib.nullcontext():
        work(True)
    if run.error is not None:
        task, exc = run.error
        if task.op is not None:
            err = task.op.error(exc)
            err.__cause__ = exc
            raise err from exc
        raise OperatorError(
            index=-1, op_type=task.label or "step", name="", device="cpu:0", debug_info="", net_name=owner, cause=exc
        ) from exc
    if stopped_at:
        assert scope is not None
        raise scope.error(f"in {owner} ({n - run.done} of {n} timestep task(s) not run)")
