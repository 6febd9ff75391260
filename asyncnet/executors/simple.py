"""The simple executor: operators one after another on the calling thread.

It defines the reference semantics every other executor must reproduce.
"""

from __future__ import annotations

import functools
import threading
import time
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from asyncnet.cancellation import RunScope, current_scope, enter_scope, has_subnets
from asyncnet.errors import NetBusyError, RunCancelledError, RunTimeoutError
from asyncnet.executors.base import Executor, ExecutorOptions, register_executor
from asyncnet.executors.pools import blas_limit, check_blas_limit, shared_timer
from asyncnet.net import Net, PreparedOp
from asyncnet.profiling import Profiler


@register_executor
class SimpleExecutor(Executor):
    """Sequential execution in NetDef order."""

    name = "simple"

    def __init__(self, net: Net, options: ExecutorOptions) -> None:
        super().__init__(net, options)
        self._busy = threading.Lock()
        self._cancelled = False
        self._has_async = any(op.is_async for op in net.ops)
        self._nested = has_subnets(net)
        self._scope: RunScope | None = None
        self._pending: Future[Any] | None = None
        self.profiler: Profiler | None = Profiler() if options.profile else None
        check_blas_limit(options.blas_threads)

    def run(self, *, timeout: float | None = None) -> None:
        if not self._busy.acquire(blocking=False):
            raise NetBusyError(f"net '{self.net.name}' is already running; runs of one net cannot overlap")
        try:
            self._cancelled = False
            if self._nested:
                self._run_scoped(timeout)
            else:
                self._run(timeout)
        finally:
            self._busy.release()

    def _run(self, timeout: float | None) -> None:
        t0 = time.perf_counter()
        with blas_limit(self.options.blas_threads):
            if timeout is None and self.profiler is None and not self._has_async:
                self._run_plain()
            else:
                deadline = time.monotonic() + timeout if timeout is not None else None
                self._run_checked(deadline, timeout)
        if self.profiler is not None:
            self.profiler.run(t0, time.perf_counter())

    def _run_scoped(self, timeout: float | None) -> None:
        """A run of a net with subnet ops: its cancel / timeout also stops the subnets running."""
        scope = RunScope(self.net.name, current_scope())
        self._scope = scope
        prev = enter_scope(scope)
        timer = None
        if timeout is not None:
            timer = shared_timer().call_later(max(timeout, 0.0), functools.partial(scope.stop, "timeout"))
        try:
            if scope.stopped():  # the run above stopped before this one registered its scope
                self._cancelled = True
            self._run(timeout)
        finally:
            if timer is not None:
                shared_timer().cancel(timer)
            enter_scope(prev)
            self._scope = None

    def _stopped_error(self, op: PreparedOp, inner: RunCancelledError, timeout: float | None) -> RunCancelledError:
        """The error of this run when an op raised RunCancelledError: the run's own, naming the op, when
        this run (or one above) was stopped; else the inner error (a subnet's own timeout)."""
        tb = inner.__traceback__
        if tb is not None and tb.tb_next is None:
            return inner  # raised by the run loop's own checks, not from inside the op
        scope = self._scope
        reason = scope.stopped() if scope is not None else ""
        if reason == "timeout" and scope is not None and scope.reason == "timeout":
            return RunTimeoutError(f"net '{self.net.name}' exceeded its timeout of {timeout:g} s in {op.info.label()}")
        if reason or self._cancelled:
            cls = RunTimeoutError if reason == "timeout" else RunCancelledError
            return cls(f"net '{self.net.name}' was cancelled in {op.info.label()}")
        return inner

    def _run_plain(self) -> None:
        op: PreparedOp | None = None
        try:
            for op in self.net.ops:
                if self._cancelled:
                    raise RunCancelledError(f"net '{self.net.name}' was cancelled before {op.info.label()}")
                op.step()
        except RunCancelledError as e:
            assert op is not None
            err = self._stopped_error(op, e, None)
            if err is e:
                raise
            raise err from e
        except Exception as e:
            assert op is not None
            raise op.error(e) from e

    def _run_checked(self, deadline: float | None, timeout: float | None) -> None:
        op: PreparedOp | None = None
        prof = self.profiler
        try:
            for op in self.net.ops:
                if self._cancelled:
                    raise RunCancelledError(f"net '{self.net.name}' was cancelled before {op.info.label()}")
                if deadline is not None and time.monotonic() > deadline:
                    raise RunTimeoutError(
                        f"net '{self.net.name}' exceeded its timeout of {timeout:g} s before {op.info.label()}"
                    )
                s = time.perf_counter()
                if op.is_async:
                    self._wait_async(op, deadline, timeout)
                else:
                    op.step()
                if prof is not None:
                    prof.op(op.index, s, time.perf_counter())
        except RunCancelledError as e:
            assert op is not None
            err = self._stopped_error(op, e, timeout)
            if err is e:
                raise
            raise err from e
        except Exception as e:
            assert op is not None
            raise op.error(e) from e

    def _wait_async(self, op: PreparedOp, deadline: float | None, timeout: float | None) -> None:
        """Wait for an async op's future; cancel() and the deadline cancel it."""
        fut = op.start()
        assert fut is not None
        self._pending = fut
        try:
            if self._cancelled:
                fut.cancel()
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                result = fut.result(timeout=remaining)
            except FutureTimeout:
                fut.cancel()
                raise RunTimeoutError(
                    f"net '{self.net.name}' exceeded its timeout of {timeout:g} s in {op.info.label()}"
                ) from None
            except CancelledError:
                raise RunCancelledError(f"net '{self.net.name}' was cancelled in {op.info.label()}") from None
        finally:
            self._pending = None
        op.store(result)

    def cancel(self) -> None:
        self._cancelled = True
        scope = self._scope
        if scope is not None:
            scope.stop("cancel")
        pending = self._pending
        if pending is not None:
            pending.cancel()
