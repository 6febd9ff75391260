"""Running nets from inside operators and plan steps: one runner for If, While, Do, plans and RNNs.

A subnet is a :class:`~asyncnet.net.Net` prepared once (its kernels built and validated when
the owning operator is prepared) and run many times. Its executor is the one its
``NetDef.type`` names, as in Caffe2 (empty: simple).

Subnets never deadlock a pool: every executor runs work on the *calling* thread (simple runs
everything there; async_scheduling's caller drives its own run and takes queued chains itself
while pool workers are busy), so an operator that runs a subnet from a pool worker finishes
even when the parent net holds every worker of that pool.

Errors: a failing inner op raises :class:`~asyncnet.errors.OperatorError` naming it (and its
net); the outer executor wraps that in the outer op's OperatorError, so the message names both.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from asyncnet.cancellation import current_scope
from asyncnet.errors import ArgumentError
from asyncnet.proto import caffe2_pb2 as pb

if TYPE_CHECKING:
    from asyncnet.executors import ExecutorOptions
    from asyncnet.net import Blob, Net
    from asyncnet.opinfo import OpInfo
    from asyncnet.workspace import Workspace

__all__ = ["ScopeFrame", "Subnet", "WorkspaceStack", "net_argument", "run_subnet"]


def run_subnet(net: Net, *, timeout: float | None = None) -> None:
    """Run a prepared net on the calling thread's behalf (the one entry point for nested runs).

    When the run that called it is cancelled or times out, ``net`` is cancelled too (see
    :mod:`asyncnet.cancellation`) and this raises RunCancelledError / RunTimeoutError.
    """
    scope = current_scope()
    if scope is None:
        net.run(timeout=timeout)
        return
    scope.add(net)
    try:
        net.run(timeout=timeout)
    finally:
        scope.discard(net)
    if scope.stopped():  # a subnet that ended anyway must not let its caller go on
        raise scope.error(f"after subnet '{net.name}'")


def net_argument(op: OpInfo, name: str, *, required: bool = False) -> pb.NetDef | None:
    """The NetDef argument ``name`` of ``op`` (None when absent and not required)."""
    value = op.args.get(name)
    if value is None:
        if required:
            have = ", ".join(sorted(op.args)) or "none"
            raise ArgumentError(f"{op.label()}: required NetDef argument '{name}' is missing (arguments: {have})")
        return None
    if not isinstance(value, pb.NetDef):
        raise ArgumentError(f"{op.label()}: argument '{name}' must be a NetDef, got {type(value).__name__}")
    return value


class Subnet:
    """A NetDef prepared in a workspace for an owner (an operator or a plan step).

    Args:
        net_def: the subnet (copied); an unnamed one is named ``<owner>/<role>``.
        workspace: where it runs (the owner's workspace, or a child of it).
        owner: shown in messages, e.g. the owning op's label.
        role: which argument it came from (``loop_net``, ``then_net``...).
        options: executor options for it.
        executor: executor name overriding ``net_def.type``.
    """

    def __init__(
        self,
        net_def: pb.NetDef,
        workspace: Workspace,
        *,
        owner: str,
        role: str,
        options: ExecutorOptions | None = None,
        executor: str | None = None,
    ) -> None:
        from asyncnet.net import Net

        if not net_def.name:
            named = pb.NetDef()
            named.CopyFrom(net_def)
            named.name = f"{owner}/{role}"
            net_def = named
        self.owner = owner
        self.role = role
        self.workspace = workspace
        self.net = Net(net_def, workspace, executor=executor, options=options)

    @property
    def name(self) -> str:
        return self.net.name

    def run(self, *, timeout: float | None = None) -> None:
        """Run the subnet once (errors name the inner op; the caller's executor adds the outer one)."""
        run_subnet(self.net, timeout=timeout)

    def close(self) -> None:
        self.net.close()

    def __repr__(self) -> str:
        return f"Subnet({self.role} of {self.owner}: {self.net!r})"


class ScopeFrame:
    """One workspace of a scope: the nets prepared in it and the names bound to outer blobs.

    ``bound`` lists the names that are bindings (not local values): a gradient Do rebinds them
    to the cells it sees, while names the forward run keeps locally (``keep``) stay.
    """

    __slots__ = ("workspace", "nets", "bound")

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.nets: dict[str, Subnet] = {}
        self.bound: set[str] = set()

    def keep(self, name: str, cell: Blob) -> None:
        """Hold ``cell`` under ``name`` as this workspace's own (a copy of a bound blob's value)."""
        self.workspace.bind(name, cell)
        self.bound.discard(name)


class WorkspaceStack:
    """The value of a scope blob (Caffe2's ``detail::WorkspaceStack``, made by ``CreateScope``).

    Each forward ``Do`` pushes a child workspace (or reuses the last one) holding the inner
    blobs of its net; bound blobs are the outer workspace's very cells. A gradient ``Do`` pops
    the newest one.
    """

    def __init__(self) -> None:
        self._stack: list[ScopeFrame] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._stack)

    def forward(self, parent: Workspace, bindings: dict[str, Blob], *, reuse: bool) -> ScopeFrame:
        """The frame a forward Do runs in: the last one when ``reuse`` and any, else a new one."""
        from asyncnet.workspace import Workspace

        with self._lock:
            if reuse and self._stack:
                frame = self._stack[-1]
            else:
                # Caffe2's child sees only the forwarded blobs, not the whole parent.
                frame = ScopeFrame(Workspace(f"{parent.name}/scope{len(self._stack)}", io_policy=parent.io_policy))
                self._stack.append(frame)
            for inner, cell in bindings.items():
                frame.workspace.bind(inner, cell)
                frame.bound.add(inner)
            return frame

    def backward(self, bindings: dict[str, Blob]) -> ScopeFrame | None:
        """Take the newest forward frame off the stack for a gradient Do (None when empty).

        ``bindings`` add the gradient blobs and rebind the forward bindings to the cells the
        gradient Do sees (the same cells, or the values an enclosing loop iteration kept); local
        blobs of the forward run keep their values (Caffe2's ``popGradientWorkspace`` skips
        defined blobs). The caller closes the frame's nets when done.
        """
        with self._lock:
            if not self._stack:
                return None
            frame = self._stack.pop()
        ws = frame.workspace
        for inner, cell in bindings.items():
            if inner in frame.bound or not ws.has(inner):
                ws.bind(inner, cell)
        return frame

    def pop(self) -> Workspace | None:
        """Drop and return the newest workspace (None when empty)."""
        with self._lock:
            if not self._stack:
                return None
            frame = self._stack.pop()
        for n in frame.nets.values():
            n.close()
        return frame.workspace

    def clear(self) -> None:
        while self.pop() is not None:
            pass

    def __repr__(self) -> str:
        return f"WorkspaceStack({len(self._stack)} workspace(s))"
