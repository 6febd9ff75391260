"""async_scheduling's sequential path: a net's ops in NetDef order on the calling thread.

Used when every chain of a net measured cheaper than a hand-off, so that a scheduled run
would run them all inline anyway: a plain loop then saves the per-chain bookkeeping.
Cancel, timeout and failures behave as on the scheduled path.
"""

from __future__ import annotations

import contextlib
import functools

from asyncnet.cancellation import RunScope
from asyncnet.errors import RunCancelledError, RunTimeoutError
from asyncnet.executors.pools import blas_limit, shared_timer
from asyncnet.net import Net, PreparedOp

_NO_BLAS_LIMIT = contextlib.nullcontext()


class SequentialRun:
    """Stop flag of a sequential run: "" (running), "cancel" or "timeout"; ``scope``: the run's
    RunScope when the net runs subnets (its stop reaches them)."""

    __slots__ = ("scope", "stop")

    def __init__(self, scope: RunScope | None = None) -> None:
        self.stop = ""
        self.scope = scope

    def set_stop(self, reason: str) -> None:
        self.stop = reason
        if self.scope is not None:
            self.scope.stop(reason)


def run_sequential(net: Net, state: SequentialRun, *, timeout: float | None, blas_threads: int | None) -> None:
    """Run every op of ``net`` in order, checking ``state.stop`` before each (set by cancel or the timer).

    Raises:
        OperatorError: an op failed (names the op; chains the kernel's exception).
        RunTimeoutError / RunCancelledError: stopped before the end.
    """
    timer = None
    if timeout is not None:
        timer = shared_timer().call_later(max(timeout, 0.0), functools.partial(state.set_stop, "timeout"))
    op: PreparedOp | None = None
    stopped = ""
    try:
        with blas_limit(blas_threads) if blas_threads is not None else _NO_BLAS_LIMIT:
            for op in net.ops:
                if state.stop:
                    stopped = state.stop
                    break
                op.step()
    except RunCancelledError as e:
        assert op is not None
        if not state.stop and not (state.scope is not None and state.scope.stopped()):
            raise  # a subnet's own timeout
        if state.stop == "timeout":
            raise RunTimeoutError(f"net '{net.name}' exceeded its timeout of {timeout:g} s in {op.info.label()}") from e
        if state.scope is not None and state.scope.stopped() == "timeout":
            raise RunTimeoutError(f"net '{net.name}' timed out in {op.info.label()}") from e
        raise RunCancelledError(f"net '{net.name}' was cancelled in {op.info.label()}") from e
    except Exception as e:
        assert op is not None
        raise op.error(e) from e
    finally:
        if timer is not None:
            shared_timer().cancel(timer)
    if stopped == "timeout":
        raise RunTimeoutError(f"net '{net.name}' exceeded its timeout of {timeout:g} s")
    if stopped:
        assert op is not None
        raise RunCancelledError(f"net '{net.name}' was cancelled before {op.info.label()}")
