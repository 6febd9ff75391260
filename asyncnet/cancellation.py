"""Cancellation of nested runs: how an outer net's cancel or timeout reaches its subnets.

Each run of a net that holds subnet-running ops (``If``, ``While``, ``Do``,
``RecurrentNetwork``...) owns a :class:`RunScope`. The executor makes it the calling thread's
current scope (and each pool worker's while it runs a chain of that run), so an op that starts a
subnet finds it without any new argument. :func:`asyncnet.subnet.run_subnet` registers the
running subnet with that scope: stopping the scope (``cancel()``, the run's timer, a failure)
cancels every registered subnet, whose own scope then stops its subnets in turn. Loops also poll
:func:`check_stopped` between iterations and timesteps, so a stop that races a subnet's start is
never lost.

Nets without subnet-running ops never create a scope: their per-op cost is unchanged.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from asyncnet.errors import RunCancelledError, RunTimeoutError

if TYPE_CHECKING:
    from asyncnet.net import Net

__all__ = ["RunScope", "check_stopped", "current_scope", "enter_scope", "has_subnets", "register_subnet_op"]

# Op types that run nets; ops with a NetDef argument count too (see has_subnets).
_SUBNET_OPS: set[str] = set()
_local = threading.local()


def register_subnet_op(op_type: str) -> None:
    """Declare that ops of ``op_type`` run subnets (their nets then get a RunScope per run)."""
    _SUBNET_OPS.add(op_type)


def has_subnets(net: Net) -> bool:
    """Whether any op of ``net`` may run a subnet."""
    from asyncnet.proto import caffe2_pb2 as pb

    for op in net.ops:
        if op.info.type in _SUBNET_OPS:
            return True
        for value in op.info.args.values():
            if isinstance(value, pb.NetDef) or (
                isinstance(value, (list, tuple)) and value and isinstance(value[0], pb.NetDef)
            ):
                return True
    return False


class RunScope:
    """The stop state of one run, reachable by the subnets its ops start.

    Args:
        net_name: the running net (for messages).
        parent: the scope of the run that started this one (None at top level).
    """

    __slots__ = ("_children", "_lock", "net_name", "parent", "reason")

    def __init__(self, net_name: str, parent: RunScope | None) -> None:
        self.net_name = net_name
        self.parent = parent
        self.reason = ""  # "", "cancel", "timeout" or "error"
        self._children: list[Net] = []
        self._lock = threading.Lock()

    def stopped(self) -> str:
        """The reason this run or any run above it stopped ("" while all run)."""
        s: RunScope | None = self
        while s is not None:
            if s.reason:
                return s.reason
            s = s.parent
        return ""

    def stop(self, reason: str) -> None:
        """Stop the run: every subnet running under it is cancelled (first reason wins)."""
        with self._lock:
            if self.reason:
                return
            self.reason = reason
            children = list(self._children)
        for net in children:
            net.cancel()

    def add(self, net: Net) -> None:
        """Register a subnet about to run; raises the stop error (registering nothing) when stopped."""
        with self._lock:
            self._children.append(net)
        # A stop that came before the registration would never reach the subnet's run: raise now.
        if self.stopped():
            self.discard(net)
            raise self.error(f"before subnet '{net.name}'")

    def discard(self, net: Net) -> None:
        """Unregister a subnet whose run ended."""
        with self._lock:
            self._children.remove(net)

    def error(self, where: str) -> RunCancelledError:
        """The error a subnet or loop raises when this run (or one above) stopped."""
        if self.stopped() == "timeout":
            return RunTimeoutError(f"net '{self.net_name}' timed out {where}")
        return RunCancelledError(f"net '{self.net_name}' was cancelled {where}")

    def __repr__(self) -> str:
        return f"RunScope({self.net_name!r}, reason={self.reason!r})"


def current_scope() -> RunScope | None:
    """The scope of the run whose op is executing on this thread (None outside scoped runs)."""
    return getattr(_local, "scope", None)


def enter_scope(scope: RunScope | None) -> RunScope | None:
    """Make ``scope`` this thread's current one; returns the previous one (restore it after)."""
    prev: RunScope | None = getattr(_local, "scope", None)
    _local.scope = scope
    return prev


def check_stopped(where: str) -> None:
    """Raise RunCancelledError / RunTimeoutError when the current run (or one above) stopped.

    Loops call it between iterations and timesteps.
    """
    scope: RunScope | None = getattr(_local, "scope", None)
    if scope is not None and scope.stopped():
        raise scope.error(where)
