"""``workspace.C``: the object-style workspace API Caffe2 exposed from its C extension.

Caffe2 scripts (and its own test base class) create private workspaces with
``workspace.C.Workspace()`` and use them without touching the current one:
``ws.create_blob("X").feed(x)``, ``ws.run(op)``, ``ws.blobs["Y"].fetch()``,
``ws.create_net(net).run()``. Here each such object wraps its own
:class:`asyncnet.Workspace`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from asyncnet.errors import MissingBlobError, WorkspaceError, did_you_mean
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import tensor_to_numpy
from asyncnet.workspace import Workspace as _AsyncWorkspace

__all__ = ["Blob", "Net", "OpSchema", "Workspace", "has_mkldnn", "registered_dbs", "builtin_cpu_supports_avx"]

has_mkldnn = False
has_fbgemm = False
is_asan = False
use_mkldnn = False
# Build flags Caffe2's caffe2.python.build read: operator schemas are always present here.
define_caffe2_no_operator_schema = False


def get_build_options() -> dict[str, str]:
    """Caffe2's build options as strings (asyncnet is pure Python: no native backends)."""
    return {"BLAS": "numpy", "USE_CUDA": "OFF", "USE_MKLDNN": "OFF", "USE_GLOO": "OFF", "USE_MPI": "OFF"}


def builtin_cpu_supports_avx() -> bool:
    """asyncnet's kernels are numpy; there is no AVX-specific path."""
    return False


def builtin_cpu_supports_avx2() -> bool:
    return False


def registered_dbs() -> list[str]:
    """DB types asyncnet can open."""
    from asyncnet.db.store import DB_TYPES

    return list(DB_TYPES)


def _as_value(arr: Any) -> Any:
    if isinstance(arr, pb.TensorProto):
        return tensor_to_numpy(arr)
    if isinstance(arr, np.ndarray) and arr.dtype.kind in "SU":
        return arr.astype(object)
    return arr


class Blob:
    """One named blob of a :class:`Workspace` (``fetch()`` / ``feed(value)``)."""

    def __init__(self, ws: _AsyncWorkspace, name: str) -> None:
        self._ws = ws
        self._name = name

    def fetch(self) -> Any:
        """The blob's value (string tensors with ``bytes`` items, as Caffe2)."""
        from asyncnet.compat.workspace import as_caffe2_fetch

        return as_caffe2_fetch(self._ws.fetch(self._name))

    def feed(self, arr: Any, device_option: pb.DeviceOption | None = None) -> bool:
        """Store ``arr`` in the blob (``device_option`` is accepted; everything lives on the CPU)."""
        self._ws.feed(self._name, _as_value(arr))
        return True

    def is_tensor(self) -> bool:
        return isinstance(self._ws.fetch(self._name), np.ndarray)

    def __repr__(self) -> str:
        return f"Blob({self._name!r})"


class _Blobs:
    """``ws.blobs``: a read-only mapping of blob name -> :class:`Blob`."""

    def __init__(self, ws: _AsyncWorkspace) -> None:
        self._ws = ws

    def __getitem__(self, name: Any) -> Blob:
        key = _key(name)
        if not self._ws.has(key):
            raise MissingBlobError(f"Can't find blob: {key}{did_you_mean(key, self._ws.blobs())}")
        return Blob(self._ws, key)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, (str, bytes)) and self._ws.has(_key(name))

    def __iter__(self) -> Iterator[str]:
        return iter(self._ws.blobs())

    def __len__(self) -> int:
        return len(self._ws.blobs())

    def keys(self) -> list[str]:
        return self._ws.blobs()

    def items(self) -> list[tuple[str, Blob]]:
        return [(b, Blob(self._ws, b)) for b in self._ws.blobs()]


def _key(name: Any) -> str:
    if isinstance(name, bytes):
        return name.decode("utf-8")
    return str(name)


def _proto(obj: Any, cls: type[Any]) -> Any:
    """``obj`` as a ``cls`` message: a message, its serialization, or a compat object with Proto()."""
    if isinstance(obj, cls):
        return obj
    if isinstance(obj, bytes):
        msg = cls()
        msg.ParseFromString(obj)
        return msg
    if hasattr(obj, "Proto"):
        return obj.Proto()
    raise WorkspaceError(f"expected a {cls.__name__} (message, bytes or core object), got {type(obj).__name__}")


class Net:
    """A net created in a :class:`Workspace` (``run()``)."""

    def __init__(self, ws: _AsyncWorkspace, name: str) -> None:
        self._ws = ws
        self._name = name

    def run(self) -> bool:
        """Run the net once."""
        from asyncnet.compat.workspace import _caffe2_errors

        with _caffe2_errors():
            self._ws.run_net(self._name)
        return True

    @property
    def name(self) -> str:
        return self._name


class Workspace:
    """A private workspace (Caffe2's ``C.Workspace``), independent of the current compat workspace."""

    def __init__(self, name: str = "") -> None:
        self._ws = _AsyncWorkspace(name or "C.Workspace")

    @property
    def blobs(self) -> _Blobs:
        return _Blobs(self._ws)

    @property
    def nets(self) -> dict[str, Net]:
        return {n: Net(self._ws, n) for n in self._ws.nets()}

    def create_blob(self, name: Any) -> Blob:
        """The blob ``name``, created (empty) when missing."""
        key = _key(name)
        if not self._ws.has(key):
            self._ws.feed(key, None)
        return Blob(self._ws, key)

    def has_blob(self, name: Any) -> bool:
        return self._ws.has(_key(name))

    def remove_blob(self, name: Any) -> None:
        self._ws.remove(_key(name))

    def fetch_blob(self, name: Any) -> Any:
        return self.blobs[name].fetch()

    def feed_blob(self, name: Any, arr: Any, device_option: pb.DeviceOption | None = None) -> bool:
        return self.create_blob(name).feed(arr, device_option)

    def create_net(self, net: Any, overwrite: bool = False) -> Net:
        """Prepare ``net`` (a NetDef, its bytes, or a core.Net) and return a handle to run it."""
        from asyncnet.compat.workspace import _caffe2_errors

        nd = _proto(net, pb.NetDef)
        if not overwrite and nd.name in self._ws.nets():
            raise WorkspaceError(f"workspace already has a net '{nd.name}'; pass overwrite=True to replace it")
        with _caffe2_errors():
            self._ws.create_net(nd)
        return Net(self._ws, nd.name)

    def run(self, obj: Any) -> bool:
        """Run an OperatorDef, NetDef or PlanDef (or a core.Net / core.Plan / ExecutionStep) once."""
        from asyncnet.compat.core import ExecutionStep, Plan
        from asyncnet.compat.workspace import _caffe2_errors

        if isinstance(obj, ExecutionStep):
            obj = Plan(obj)
        msg = obj.Proto() if hasattr(obj, "Proto") else obj
        with _caffe2_errors():
            if isinstance(msg, pb.OperatorDef):
                self._ws.run_operator_once(msg)
            elif isinstance(msg, pb.NetDef):
                self._ws.run_net_once(msg)
            elif isinstance(msg, pb.PlanDef):
                self._ws.run_plan(msg)
            else:
                raise WorkspaceError(f"Workspace.run takes an OperatorDef, NetDef or PlanDef, got {type(msg).__name__}")
        return True

    def reset(self) -> None:
        self._ws.reset()


class OpSchema:
    """Caffe2's ``C.OpSchema`` view of a registered op's schema (``OpSchema.get(type)``)."""

    def __init__(self, schema: Any) -> None:
        self._schema = schema

    @staticmethod
    def get(op_type: str) -> OpSchema | None:
        """The schema of ``op_type``; None when no such op is registered."""
        from asyncnet.errors import UnknownOperatorError
        from asyncnet.registry import default_registry

        try:
            return OpSchema(default_registry().schema(op_type))
        except UnknownOperatorError:
            return None

    @property
    def name(self) -> str:
        return str(self._schema.type)

    @property
    def doc(self) -> str:
        return str(self._schema.doc)

    @property
    def private(self) -> bool:
        return False

    @property
    def min_input(self) -> int:
        return int(self._schema.inputs[0])

    @property
    def max_input(self) -> int:
        return int(self._schema.inputs[1])

    @property
    def min_output(self) -> int:
        return int(self._schema.outputs[0])

    @property
    def max_output(self) -> int:
        return int(self._schema.outputs[1])
