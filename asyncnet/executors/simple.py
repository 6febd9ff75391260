"""The simple executor: operators one after another on the calling thread.

It defines the reference semantics every other executor must reproduce.
"""

from __future__ import annotations

import threading
import time

from asyncnet.errors import NetBusyError, RunCancelledError, RunTimeoutError
from asyncnet.executors.base import Executor, ExecutorOptions, register_executor
from asyncnet.net import Net


@register_executor
class SimpleExecutor(Executor):
    """Sequential execution in NetDef order."""

    name = "simple"

    def __init__(self, net: Net, options: ExecutorOptions) -> None:
        super().__init__(net, options)
        self._busy = threading.Lock()
        self._cancelled = False

    def run(self, *, timeout: float | None = None) -> None:
        if not self._busy.acquire(blocking=False):
            raise NetBusyError(f"net '{self.net.name}' is already running; runs of one net cannot overlap")
        try:
            self._cancelled = False
            if timeout is None:
                self._run_plain()
            else:
                self._run_checked(time.monotonic() + timeout, timeout)
        finally:
            self._busy.release()

    def _run_plain(self) -> None:
        op = None
        try:
            for op in self.net.ops:
                if self._cancelled:
                    raise RunCancelledError(f"net '{self.net.name}' was cancelled before {op.info.label()}")
                op.run()
        except RunCancelledError:
            raise
        except Exception as e:
            assert op is not None
            raise op.error(e) from e

    def _run_checked(self, deadline: float, timeout: float) -> None:
        op = None
        try:
            for op in self.net.ops:
                if self._cancelled:
                    raise RunCancelledError(f"net '{self.net.name}' was cancelled before {op.info.label()}")
                if time.monotonic() > deadline:
                    raise RunTimeoutError(
                        f"net '{self.net.name}' exceeded its timeout of {timeout:g} s before {op.info.label()}"
                    )
                op.run()
        except RunCancelledError:
            raise
        except Exception as e:
            assert op is not None
            raise op.error(e) from e

    def cancel(self) -> None:
        self._cancelled = True
