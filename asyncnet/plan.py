"""Running a PlanDef: execution steps of nets and substeps, as Caffe2's plan executor did.

Semantics carried over from Caffe2:

* a step has either ``network`` names or ``substep``s, never both; nets come from
  ``PlanDef.network`` (names unique) and are created in the workspace on first use
  (replacing a net of that name that existed before the plan);
* iterations: ``num_iter`` (default 1); with ``should_stop_blob`` the step repeats until
  that blob holds a true scalar bool (checked after every net / substep), and
  ``num_iter`` must not be set; ``only_once`` (only with ``should_stop_blob``) runs one
  iteration;
* ``concurrent_substeps``: each iteration runs every substep on its own thread
  (``num_concurrent_instances`` copies each); the first failure stops the others
  (their nets are cancelled and they start no further iteration) and is raised;
* ``report_net`` runs every ``report_interval`` seconds on a reporter thread while the
  step runs, and once more when it ends; a substep with ``run_every_ms`` is run that
  way instead of as a regular substep.

``create_workspace`` (child workspaces) is not supported.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from asyncnet.errors import ExecutorError, NetDefinitionError, RunCancelledError, UnsupportedError
from asyncnet.executors import ExecutorOptions
from asyncnet.net import EMPTY, Net
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.subnet import run_subnet

if TYPE_CHECKING:
    from asyncnet.workspace import Workspace

log = logging.getLogger(__name__)

ShouldContinue = Callable[[int], bool]


class _Scope:
    """Failure state shared by the threads of one step (Caffe2's CompiledExecutionStep)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.failed = False
        self.errors: list[BaseException] = []
        self.nets: list[Net] = []
        self.children: list[_Scope] = []

    def fail(self, exc: BaseException) -> None:
        with self.lock:
            self.errors.append(exc)
            self.failed = True
        self.cancel()

    def cancel(self) -> None:
        with self.lock:
            nets, children = list(self.nets), list(self.children)
        for n in nets:
            n.cancel()
        for c in children:
            c.cancel()


# Concurrent substeps each get a thread (they may wait on one another, so a bounded pool could
# deadlock); a plan file asking for more than this at once is refused instead.
MAX_PLAN_THREADS = 256


def _threads_needed(step: pb.ExecutionStep) -> int:
    """Threads a step's subtree starts at once at most (0 for a step run on the caller's thread)."""
    inner = max((_threads_needed(s) for s in step.substep), default=0)
    instances = max(1, step.num_concurrent_instances) if step.HasField("num_concurrent_instances") else 1
    concurrent = (step.concurrent_substeps and len(step.substep) > 1) or instances > 1
    if not concurrent:
        return inner
    return len(step.substep) * instances * (1 + inner)


class PlanRunner:
    """Runs one PlanDef against a workspace.

    Args:
        workspace: where nets and blobs live.
        plan: the plan (copied).
        executor: executor name overriding every net's ``type``.
        options: executor options for the nets.
    """

    def __init__(
        self,
        workspace: Workspace,
        plan: pb.PlanDef,
        *,
        executor: str | None = None,
        options: ExecutorOptions | None = None,
    ) -> None:
        self.workspace = workspace
        self.plan = pb.PlanDef()
        self.plan.CopyFrom(plan)
        self.executor = executor
        self.options = options
        self._defs: dict[str, pb.NetDef] = {}
        for nd in self.plan.network:
            if nd.name in self._defs:
                raise NetDefinitionError(f"plan '{plan.name}' has two networks named '{nd.name}'")
            self._defs[nd.name] = nd
        self._nets: dict[str, Net] = {}
        self._nets_lock = threading.Lock()
        self._root = _Scope()
        self._cancelled = False
        self.iterations: dict[str, int] = {}

    def run(self) -> None:
        """Run every execution step in order; raises the first failure."""
        self._cancelled = False
        for step in self.plan.execution_step:
            self._check(step)
            need = _threads_needed(step)
            if need > MAX_PLAN_THREADS:
                raise NetDefinitionError(
                    f"plan '{self.plan.name}' step '{step.name}': concurrent substeps and "
                    f"num_concurrent_instances would start {need} threads at once (limit {MAX_PLAN_THREADS})"
                )
        for step in self.plan.execution_step:
            self._run_step(step, lambda _i: not self._cancelled, self._root)
            if self._cancelled:
                raise RunCancelledError(f"plan '{self.plan.name}' was cancelled in step '{step.name}'")

    def cancel(self) -> None:
        """Stop the plan: running nets are cancelled and no further iteration starts."""
        self._cancelled = True
        self._root.cancel()

    # -- validation ------------------------------------------------------------------

    def _check(self, step: pb.ExecutionStep) -> None:
        where = f"plan '{self.plan.name}' step '{step.name}'"
        if step.substep and step.network:
            raise NetDefinitionError(f"{where}: a step has either substeps or networks, not both")
        if step.HasField("should_stop_blob") and step.HasField("num_iter"):
            raise NetDefinitionError(f"{where}: num_iter must not be set together with should_stop_blob")
        if step.HasField("only_once") and not step.HasField("should_stop_blob"):
            raise NetDefinitionError(f"{where}: only_once needs should_stop_blob")
        if step.create_workspace:
            raise UnsupportedError(f"{where}: create_workspace (child workspaces) is not supported")
        if step.HasField("report_net") and not step.HasField("report_interval"):
            raise NetDefinitionError(f"{where}: report_net '{step.report_net}' needs report_interval")
        for name in [*step.network, *([step.report_net] if step.HasField("report_net") else [])]:
            if name not in self._defs:
                known = ", ".join(sorted(self._defs)) or "none"
                raise NetDefinitionError(f"{where} uses undefined net '{name}'; plan networks: {known}")
        for sub in step.substep:
            self._check(sub)

    # -- running ---------------------------------------------------------------------

    def _net(self, name: str) -> Net:
        with self._nets_lock:
            net = self._nets.get(name)
            if net is None:
                net = self.workspace.create_net(self._defs[name], executor=self.executor, options=self.options)
                self._nets[name] = net
            return net

    def _should_stop(self, step: pb.ExecutionStep) -> bool:
        if not step.HasField("should_stop_blob"):
            return False
        value = self.workspace.cell(step.should_stop_blob).value
        if value is EMPTY:
            return False
        arr = np.asarray(value)
        if arr.dtype != np.bool_ or arr.size != 1:
            raise ExecutorError(
                f"plan '{self.plan.name}' step '{step.name}': should_stop_blob '{step.should_stop_blob}' must hold "
                f"a scalar bool, found {arr.dtype} of shape {arr.shape}"
            )
        return bool(arr.reshape(()))

    def _run_step(self, step: pb.ExecutionStep, outer: ShouldContinue, parent: _Scope) -> None:
        scope = _Scope()
        with parent.lock:
            parent.children.append(scope)
        try:
            self._run_step_in(step, outer, scope)
        finally:
            with parent.lock:
                parent.children.remove(scope)
        if scope.errors:
            first = scope.errors[0]
            raise first

    def _run_step_in(self, step: pb.ExecutionStep, outer: ShouldContinue, scope: _Scope) -> None:
        if step.HasField("should_stop_blob"):
            once = step.only_once

            def own(i: int) -> bool:
                return i == 0 if once else True
        else:
            n_iter = step.num_iter if step.HasField("num_iter") else 1

            def own(i: int) -> bool:
                return i < n_iter

        def should_continue(i: int) -> bool:
            return outer(i) and own(i)

        reporters = _Reporters(scope)
        try:
            if step.HasField("report_net"):
                report = self._net(step.report_net)
                with scope.lock:
                    scope.nets.append(report)
                reporters.start(f"{step.name}-report", step.report_interval, report.run)
            regular = []
            for sub in step.substep:
                if sub.HasField("run_every_ms"):
                    reporters.start(
                        f"{sub.name}-every",
                        sub.run_every_ms / 1000.0,
                        functools.partial(self._run_step, sub, outer, scope),
                    )
                else:
                    regular.append(sub)
            if step.substep:
                self._substeps(step, regular, should_continue, outer, scope)
            else:
                nets = [self._net(n) for n in step.network]
                with scope.lock:
                    scope.nets.extend(nets)
                i = 0
                try:
                    while should_continue(i):
                        i += 1
                        for net in nets:
                            run_subnet(net)
                            if self._should_stop(step):
                                return
                finally:
                    self._count(step, i)
        except BaseException as e:
            scope.fail(e)
        finally:
            reporters.stop()

    def _substeps(
        self,
        step: pb.ExecutionStep,
        subs: list[pb.ExecutionStep],
        should_continue: ShouldContinue,
        outer: ShouldContinue,
        scope: _Scope,
    ) -> None:
        instances = max(1, step.num_concurrent_instances) if step.HasField("num_concurrent_instances") else 1
        concurrent = (step.concurrent_substeps and len(subs) > 1) or instances > 1
        i = 0
        try:
            if not concurrent:
                while should_continue(i):
                    i += 1
                    for sub in subs:
                        self._run_step(sub, outer, scope)
                        if self._should_stop(step):
                            return
            else:
                while should_continue(i):
                    i += 1
                    self._concurrent_iteration(step, subs, instances, outer, scope)
                    if scope.failed or self._should_stop(step):
                        return
        finally:
            self._count(step, i)

    def _count(self, step: pb.ExecutionStep, iterations: int) -> None:
        with self._nets_lock:
            self.iterations[step.name] = self.iterations.get(step.name, 0) + iterations

    def _concurrent_iteration(
        self,
        step: pb.ExecutionStep,
        subs: list[pb.ExecutionStep],
        instances: int,
        should_continue: ShouldContinue,
        scope: _Scope,
    ) -> None:

        def sub_continue(i: int) -> bool:
            return not scope.failed and should_continue(i)

        threads = []
        for k in range(len(subs) * instances):
            sub = subs[k % len(subs)]

            def body(sub: pb.ExecutionStep = sub) -> None:
                if scope.failed:
                    return
                try:
                    self._run_step(sub, sub_continue, scope)
                except BaseException as e:
                    scope.fail(e)

            t = threading.Thread(target=body, name=f"asyncnet-plan-{step.name or 'step'}-{k}", daemon=True)
            t.start()
            threads.append(t)
        for t in threads:
            t.join()


class _Reporters:
    """Threads running a callable every ``interval`` seconds until stopped (then once more)."""

    def __init__(self, scope: _Scope) -> None:
        self.scope = scope
        self.done = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self, name: str, interval: float, fn: Callable[[], Any]) -> None:
        def loop() -> None:
            while True:
                finished = self.done.wait(max(interval, 0.0))
                try:
                    fn()
                except BaseException as e:
                    log.warning("reporter '%s' failed: %s", name, e)
                    self.scope.fail(e)
                    return
                if finished:
                    return

        t = threading.Thread(target=loop, name=f"asyncnet-plan-{name}", daemon=True)
        t.start()
        self.threads.append(t)

    def stop(self) -> None:
        self.done.set()
        for t in self.threads:
            t.join()


def run_plan(
    workspace: Workspace,
    plan: pb.PlanDef,
    *,
    executor: str | None = None,
    options: ExecutorOptions | None = None,
) -> PlanRunner:
    """Run ``plan`` in ``workspace``; returns the finished runner (nets stay in the workspace)."""
    runner = PlanRunner(workspace, plan, executor=executor, options=options)
    if not plan.execution_step:
        log.warning("plan '%s' has no execution steps; nothing to run", plan.name)
    runner.run()
    return runner
