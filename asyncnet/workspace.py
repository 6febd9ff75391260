"""Workspace: named blobs and the nets prepared against them.

Several workspaces live side by side in one process; nothing here is global.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from asyncnet.errors import BlobNotFoundError, NetNotFoundError, did_you_mean
from asyncnet.executors import ExecutorOptions
from asyncnet.iopolicy import IOPolicy
from asyncnet.net import EMPTY, Blob, Net, op_info, prepare_op
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import tensor_to_numpy

_counter = itertools.count()


class Workspace:
    """Blobs (numpy arrays or any Python object) and nets.

    Example:
        >>> ws = Workspace()
        >>> ws.feed("x", np.ones(3, np.float32))
        >>> ws.run_net_once(net_def)
        >>> y = ws.fetch("y")
    """

    def __init__(
        self,
        name: str = "",
        *,
        parent: Workspace | None = None,
        io_policy: IOPolicy | None = None,
        private: Iterable[str] = (),
    ) -> None:
        """Args:
        name: shown in messages (auto-named when empty).
        parent: a child workspace sees every blob the parent holds when a net is prepared (the
            same cell: no copy, as Caffe2's shared workspaces) and keeps the blobs it creates to
            itself; parameters loaded once in a parent serve many children.
        io_policy: which files nets may read and write (default: the parent's, else permissive,
            as Caffe2 was).
        private: names that stay this workspace's own even when the parent holds them (a
            Predictor's request inputs and the blobs its net writes must never reach the shared
            parameters).
        """
        self.name = name or f"workspace_{next(_counter)}"
        self.parent = parent
        self.io_policy: IOPolicy = io_policy or (parent.io_policy if parent is not None else IOPolicy.permissive())
        self.private: frozenset[str] = frozenset(private)
        self._cells: dict[str, Blob] = {}
        self._nets: dict[str, Net] = {}
        self._lock = threading.RLock()

    # -- blobs ---------------------------------------------------------------

    def cell(self, name: str) -> Blob:
        """The cell behind ``name`` (created empty if new). Prepared ops bind to cells."""
        c = self._cells.get(name)
        if c is None:
            inherited = self._inherited(name)
            if inherited is not None:
                return inherited
            with self._lock:
                c = self._cells.setdefault(name, Blob(name))
        return c

    def _inherited(self, name: str) -> Blob | None:
        if self.parent is None or name in self.private:
            return None
        return self.parent._shared_cell(name)

    def _shared_cell(self, name: str) -> Blob | None:
        # A parent lends only cells that hold a value; unknown names stay the child's own.
        c = self._cells.get(name)
        if c is not None and c.value is not EMPTY:
            return c
        return self.parent._shared_cell(name) if self.parent is not None else None

    def bind(self, name: str, cell: Blob) -> None:
        """Make ``name`` here the very cell ``cell`` of another workspace (Caffe2's blob bindings).

        Control ops (Do, RecurrentNetwork) forward selected outer blobs into their child
        workspaces under inner names; reads and writes go to the outer blob.
        """
        with self._lock:
            self._cells[name] = cell

    def feed(self, name: str, value: Any) -> None:
        """Store ``value`` under ``name``; a TensorProto is converted to an array."""
        if isinstance(value, pb.TensorProto):
            value = tensor_to_numpy(value)
        self.cell(name).value = value

    def fetch(self, name: str) -> Any:
        """The value of blob ``name`` (a parent's blob when this workspace has none)."""
        c = self._cells.get(name)
        if c is None or c.value is EMPTY:
            c = self._inherited(name)
        if c is None or c.value is EMPTY:
            raise BlobNotFoundError(f"workspace '{self.name}' has no blob '{name}'{did_you_mean(name, self.blobs())}")
        return c.value

    def has(self, name: str) -> bool:
        c = self._cells.get(name)
        if c is not None and c.value is not EMPTY:
            return True
        return self._inherited(name) is not None

    def blobs(self) -> list[str]:
        """Names of the blobs holding a value, sorted (a parent's included)."""
        own = {n for n, c in list(self._cells.items()) if c.value is not EMPTY}
        if self.parent is not None:
            own.update(n for n in self.parent.blobs() if n not in self.private)
        return sorted(own)

    def local_blobs(self) -> list[str]:
        """Names of the blobs this workspace itself holds (not a parent's), sorted."""
        return sorted(n for n, c in list(self._cells.items()) if c.value is not EMPTY)

    def remove(self, name: str) -> None:
        """Drop the value of ``name`` (prepared nets keep their binding to the name)."""
        c = self._cells.get(name)
        if c is None or c.value is EMPTY:
            where = " (it belongs to the parent workspace)" if self.has(name) else ""
            raise BlobNotFoundError(f"workspace '{self.name}' has no blob '{name}' to remove{where}")
        c.value = EMPTY

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.has(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.blobs())

    # -- nets ------------------------------------------------------------------

    def create_net(
        self,
        net_def: pb.NetDef,
        *,
        executor: str | None = None,
        options: ExecutorOptions | None = None,
        threads: int | None = None,
        overwrite: bool = True,
    ) -> Net:
        """Prepare ``net_def`` and keep it under its name (auto-named when empty)."""
        if threads is not None:
            options = ExecutorOptions(threads=threads) if options is None else options
            options.threads = threads
        if not net_def.name:
            copy = pb.NetDef()
            copy.CopyFrom(net_def)
            copy.name = f"net_{next(_counter)}"
            net_def = copy
        with self._lock:
            if net_def.name in self._nets and not overwrite:
                raise NetNotFoundError(f"workspace '{self.name}' already has a net '{net_def.name}'")
        net = Net(net_def, self, executor=executor, options=options)
        with self._lock:
            old = self._nets.pop(net.name, None)
            self._nets[net.name] = net
        if old is not None:
            old.close()
        return net

    def net(self, name: str) -> Net:
        """The prepared net called ``name``."""
        try:
            return self._nets[name]
        except KeyError:
            raise NetNotFoundError(
                f"workspace '{self.name}' has no net '{name}'{did_you_mean(name, self._nets)}; "
                f"nets: {', '.join(sorted(self._nets)) or 'none'}"
            ) from None

    def nets(self) -> list[str]:
        return sorted(self._nets)

    def run_net(self, name: str, *, timeout: float | None = None) -> None:
        """Run the prepared net ``name`` once."""
        self.net(name).run(timeout=timeout)

    def run_net_once(
        self,
        net_def: pb.NetDef,
        *,
        executor: str | None = None,
        options: ExecutorOptions | None = None,
        timeout: float | None = None,
    ) -> None:
        """Prepare, run and discard ``net_def`` (it is not kept in the workspace)."""
        with Net(net_def, self, executor=executor, options=options) as net:
            net.run(timeout=timeout)

    def run_plan(
        self, plan_def: pb.PlanDef, *, executor: str | None = None, options: ExecutorOptions | None = None
    ) -> None:
        """Run a PlanDef (execution steps of nets, see asyncnet.plan); its nets stay in the workspace."""
        from asyncnet.plan import run_plan

        run_plan(self, plan_def, executor=executor, options=options)

    def run_operator_once(self, op_def: pb.OperatorDef) -> None:
        """Run one OperatorDef against this workspace."""
        op = prepare_op(op_info(op_def, workspace=self), self)
        missing = [c.name for c in op.inputs if c.value is EMPTY]
        if missing:
            raise BlobNotFoundError(f"{op.info.label()} reads blob(s) {missing} that the workspace does not have")
        try:
            op.run()
        except Exception as e:
            raise op.error(e) from e

    def delete_net(self, name: str) -> None:
        """Close and forget the net ``name``."""
        self.net(name).close()
        with self._lock:
            self._nets.pop(name, None)

    def reset(self) -> None:
        """Close every net and drop every blob."""
        self.close()
        with self._lock:
            self._cells.clear()

    def close(self) -> None:
        """Close every net (their threads stop); blobs stay."""
        with self._lock:
            nets = list(self._nets.values())
            self._nets.clear()
        for n in nets:
            n.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Workspace({self.name!r}, {len(self.blobs())} blobs, {len(self._nets)} nets)"
