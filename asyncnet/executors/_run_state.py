"""The state of one async_scheduling run, and the bookkeeping done on it under its lock.

One :class:`RunState` per run (never reused), so a callback left over from a finished run
cannot touch the next one. The executor (:mod:`asyncnet.executors.async_scheduling`) decides
what runs where; this module only counts: which chains are queued, active, finished, and
how the run ended.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from asyncnet.cancellation import RunScope
from asyncnet.errors import OperatorError, RunCancelledError, RunTimeoutError
from asyncnet.executors.blas import BlasGovernor
from asyncnet.opinfo import DeviceKey


class RunState:
    """State of one run (a fresh object per run, so stale callbacks cannot touch the next)."""

    __slots__ = (
        "cond",
        "counts",
        "remaining",
        "active",
        "stop",
        "reason",
        "finished",
        "errors",
        "queues",
        "drainers",
        "caller_idle",
        "futures",
        "held",
        "scope",
        "stopped_in",
    )

    def __init__(self, counts: list[int], devices: list[DeviceKey]) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.counts = counts
        self.remaining = len(counts)
        self.active = 0
        self.stop = False
        self.reason = ""
        self.finished = False
        self.errors: list[OperatorError] = []
        self.queues: dict[DeviceKey, deque[int]] = {d: deque() for d in devices}
        self.drainers: dict[DeviceKey, int] = dict.fromkeys(devices, 0)
        self.caller_idle = False
        self.scope: RunScope | None = None  # only for nets that run subnets
        self.stopped_in = ""  # the op in which a stop interrupted a subnet
        self.futures: set[Future[Any]] = set()
        # Queued chains with a BLAS governor slot already taken for them (see the executor's _push).
        self.held = bytearray(len(counts))

    def drop_queued(self, gov: BlasGovernor | None) -> None:
        """Forget queued chains of a stopped run, giving back the governor slots held for them (lock held)."""
        n = 0
        held = self.held
        for q in self.queues.values():
            n += len(q)
            for c in q:
                if held[c]:
                    held[c] = 0
                    assert gov is not None
                    gov.exit()
            q.clear()
        if n:
            self.active -= n
            if self.active == 0:
                self.finished = True
                self.cond.notify_all()

    def finish(self, children: Sequence[int], ok: bool) -> list[int]:
        """A chain with these ``children`` ended (ran all its ops if ``ok``); returns the chains now ready."""
        with self.cond:
            self.active -= 1
            ready: list[int] = []
            if ok:
                self.remaining -= 1
                if not self.stop:
                    counts = self.counts
                    for ch in children:
                        counts[ch] -= 1
                        if counts[ch] == 0:
                            ready.append(ch)
                    self.active += len(ready)
            if self.remaining == 0 or (self.stop and self.active == 0):
                self.finished = True
                self.cond.notify_all()
        return ready

    def raise_outcome(self, net_name: str, timeout: float | None) -> None:
        """Raise the run's first error (with the others attached), or why it stopped early; else return."""
        if self.errors:
            first, *others = self.errors
            if others:
                first.add_others(others)
            raise first from first.cause
        if self.remaining:
            where = f" in {self.stopped_in}" if self.stopped_in else ""
            if self.reason == "timeout":
                raise RunTimeoutError(f"net '{net_name}' exceeded its timeout of {timeout:g} s{where}")
            if self.scope is not None and self.scope.stopped() == "timeout":
                raise RunTimeoutError(f"net '{net_name}' timed out{where}")
            raise RunCancelledError(f"net '{net_name}' was cancelled{where} ({self.remaining} chain(s) not run)")
