"""Caffe2's ``workspace`` module on asyncnet: a process-wide current workspace.

Global state is deliberate here (Caffe2 scripts rely on it): workspaces are kept
by name, ``"default"`` is current at start. Each is an :class:`asyncnet.Workspace`
(``CurrentWorkspaceObject()`` hands it out for use with the idiomatic API).
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from asyncnet.compat.core import BlobReference, ExecutionStep, Net, Plan
from asyncnet.compat.workspace_extra import (
    DeserializeBlob,
    GetCUDAVersion,
    GetCuDNNVersion,
    GetDeviceProperties,
    GetGPUMemoryInfo,
    GetGpuPeerAccessPattern,
    GetNetName,
    GetOperatorCost,
    IsNUMAEnabled,
    SerializeBlob,
    StringifyProto,
    has_fbgemm,
    is_asan,
)
from asyncnet.errors import AsyncNetError, MissingBlobError, WorkspaceError, did_you_mean
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import tensor_to_numpy
from asyncnet.workspace import Workspace

__all__ = [
    "Blobs",
    "DeserializeBlob",
    "GetCUDAVersion",
    "GetCuDNNVersion",
    "GetDeviceProperties",
    "GetGPUMemoryInfo",
    "GetGpuPeerAccessPattern",
    "GetNetName",
    "GetOperatorCost",
    "IsNUMAEnabled",
    "SerializeBlob",
    "StringifyProto",
    "has_fbgemm",
    "is_asan",
    "CreateBlob",
    "GetBlobSizeBytes",
    "GpuDeviceType",
    "InferShapesAndTypes",
    "NumCudaDevices",
    "NumGpuDevices",
    "NumHipDevices",
    "RegisteredOperators",
    "RootFolder",
    "CreateNet",
    "CurrentWorkspace",
    "CurrentWorkspaceObject",
    "FeedBlob",
    "FetchBlob",
    "FetchBlobs",
    "GlobalInit",
    "HasBlob",
    "RemoveBlob",
    "ResetWorkspace",
    "RunNet",
    "RunNetOnce",
    "RunOperatorOnce",
    "RunOperatorsOnce",
    "RunPlan",
    "RunPlanInBackground",
    "FeedImmediate",
    "FetchImmediate",
    "ImmediateBlobs",
    "IsImmediate",
    "RunOperatorImmediate",
    "StartImmediate",
    "StopImmediate",
    "SwitchWorkspace",
    "Workspaces",
    "blobs",
    "has_cuda_support",
    "has_gpu_support",
]

has_gpu_support = False
has_cuda_support = False
has_hip_support = False
GpuDeviceType = pb.PROTO_CUDA
_root_folder = ""


def NumGpuDevices() -> int:
    """GPUs asyncnet can use: none (numpy kernels run on the CPU)."""
    return 0


def NumCudaDevices() -> int:
    return 0


def NumHipDevices() -> int:
    return 0


def RegisteredOperators() -> list[str]:
    """Every registered op type."""
    from asyncnet.registry import default_registry

    return default_registry().types()


_lock = threading.RLock()
_RUNTIME_TWINS: dict[type[BaseException], type[BaseException]] = {}


def _runtime_twin(cls: type[BaseException]) -> type[BaseException]:
    """``cls`` that is also a RuntimeError (what Caffe2 raised for every enforce failure)."""
    twin = _RUNTIME_TWINS.get(cls)
    if twin is None:
        twin = type(cls.__name__, (cls, RuntimeError), {"__module__": cls.__module__, "__doc__": cls.__doc__})
        _RUNTIME_TWINS[cls] = twin
    return twin


@contextlib.contextmanager
def _caffe2_errors() -> Iterator[None]:
    """Re-raise asyncnet errors that are not RuntimeErrors as subclasses that also are.

    Caffe2 scripts catch RuntimeError around RunOperatorOnce / RunNet / CreateNet; the original
    class (ValueError, KeyError, ...) still matches too.
    """
    try:
        yield
    except AsyncNetError as e:
        if isinstance(e, RuntimeError):
            raise
        try:
            twin = _runtime_twin(type(e))(*e.args)
        except TypeError:
            raise e from None
        raise twin from e


_workspaces: dict[str, Workspace] = {"default": Workspace("default")}
_current = "default"
# Blobs a created net writes, per workspace: Caffe2's CreateNet creates them (empty), so a later
# CreateNet may read them before any net has run.
_declared: weakref.WeakKeyDictionary[Workspace, set[str]] = weakref.WeakKeyDictionary()


def CurrentWorkspaceObject() -> Workspace:
    """The asyncnet Workspace behind the current Caffe2-style workspace."""
    return _workspaces[_current]


def CurrentWorkspace() -> str:
    """Name of the current workspace."""
    return _current


def Workspaces() -> list[str]:
    return sorted(_workspaces)


def SwitchWorkspace(name: str, create_if_missing: bool = False) -> None:
    """Make workspace ``name`` current (created when missing and ``create_if_missing``)."""
    global _current
    name = _name(name)  # bytes names (Caffe2's own helpers pass b"temp_ws") decode as UTF-8
    with _lock:
        if name not in _workspaces:
            if not create_if_missing:
                raise WorkspaceError(
                    f"workspace '{name}' does not exist{did_you_mean(name, _workspaces)}; "
                    "pass create_if_missing=True to create it"
                )
            _workspaces[name] = Workspace(name)
        _current = name


def ResetWorkspace(root_folder: str | None = None) -> bool:
    """Drop every blob and net of the current workspace (``root_folder`` is kept for RootFolder())."""
    global _root_folder
    ws = CurrentWorkspaceObject()
    ws.reset()
    _declared.pop(ws, None)
    if root_folder is not None:
        _root_folder = root_folder
    return True


def RootFolder() -> str:
    """The root folder last given to ResetWorkspace ("" when none was)."""
    return _root_folder


def GlobalInit(args: Sequence[str] = ()) -> bool:
    """Accepted for compatibility; asyncnet has no global flags."""
    return True


def _name(blob: Any) -> str:
    if isinstance(blob, bytes):
        return blob.decode("utf-8")
    return str(blob)


def FeedBlob(name: Any, arr: Any, device_option: pb.DeviceOption | None = None) -> bool:
    """Store ``arr`` as blob ``name`` (a TensorProto is converted; text arrays become objects)."""
    if isinstance(arr, pb.TensorProto):
        arr = tensor_to_numpy(arr)
    if isinstance(arr, np.ndarray) and arr.dtype.kind in "SU":
        arr = arr.astype(object)
    CurrentWorkspaceObject().feed(_name(name), arr)
    return True


def FetchBlob(name: Any) -> Any:
    """The value of blob ``name``."""
    ws = CurrentWorkspaceObject()
    key = _name(name)
    if not ws.has(key):
        raise MissingBlobError(f"Can't find blob: {key} (workspace '{_current}'){did_you_mean(key, ws.blobs())}")
    return as_caffe2_fetch(ws.fetch(key))


def as_caffe2_fetch(value: Any) -> Any:
    """A fetched value as Caffe2 returned it: a copy (changing it leaves the blob alone), string
    tensors with ``bytes`` items (Caffe2 stored std::string: text fed as ``str`` comes back UTF-8)."""
    if not isinstance(value, np.ndarray):
        return value
    if value.dtype != object or not any(isinstance(v, str) for v in value.reshape(-1)):
        return value.copy()
    flat = value.reshape(-1)
    enc = np.empty(flat.shape, dtype=object)
    enc[:] = [v.encode("utf-8") if isinstance(v, str) else v for v in flat]
    return enc.reshape(value.shape)


def CreateBlob(name: Any) -> BlobReference:
    """Create an empty blob (HasBlob becomes true; it holds None until something writes it)."""
    ws = CurrentWorkspaceObject()
    key = _name(name)
    if not ws.has(key):
        ws.feed(key, None)
    return BlobReference(key)


def GetBlobSizeBytes(name: Any) -> int:
    """Bytes held by blob ``name`` (string tensors: the total length of their items)."""
    value = FetchBlob(name)
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return int(sum(len(v) if isinstance(v, (bytes, str)) else 0 for v in value.reshape(-1).tolist()))
        return int(value.nbytes)
    if isinstance(value, (bytes, str)):
        return len(value)
    return 0


def InferShapesAndTypes(
    nets: Sequence[Any], blob_dimensions: dict[str, Any] | None = None, nets_proto: bool = False, blob_types: Any = None
) -> tuple[dict[str, list[int]], dict[str, int]]:
    """Shapes and TensorProto data types of the nets' blobs, from the current workspace's blobs and the
    given ``blob_dimensions`` (and ``blob_types``), as Caffe2's shape inference reported them."""
    from asyncnet.schema import TensorInfo
    from asyncnet.serde import caffe2_data_type
    from asyncnet.shapes import infer_shapes, info_of

    ws = CurrentWorkspaceObject()
    known: dict[str, TensorInfo] = {}
    for b in ws.blobs():
        v = ws.fetch(b)
        if isinstance(v, np.ndarray):
            known[b] = info_of(v)
    for b, dims in (blob_dimensions or {}).items():
        dt = None
        if blob_types and b in blob_types:
            from asyncnet.serde import numpy_dtype

            dt = numpy_dtype(int(blob_types[b]))
        known[b] = TensorInfo(tuple(int(d) for d in dims), dt if dt is not None else np.dtype(np.float32))
    shapes: dict[str, list[int]] = {}
    types: dict[str, int] = {}

    def record(b: str, info: TensorInfo) -> None:
        if info.shape is not None and all(d is not None for d in info.shape):
            shapes[b] = [int(d) for d in info.shape]  # type: ignore[arg-type]
        if info.dtype is not None:
            try:
                types[b] = caffe2_data_type(info.dtype)
            except AsyncNetError:
                pass  # no TensorProto type (e.g. handles)

    # As Caffe2's inference from the workspace: every existing blob is described, and an op whose
    # inference cannot size an output leaves that blob's existing description in place.
    for b, info in known.items():
        record(b, info)
    for net in nets:
        nd = net if isinstance(net, pb.NetDef) else _net_def(net)
        result = infer_shapes(nd, known)
        for b, info in result.blobs.items():
            known[b] = info
            record(b, info)
    return shapes, types


def FetchBlobs(names: Sequence[Any]) -> list[Any]:
    return [FetchBlob(n) for n in names]


def HasBlob(name: Any) -> bool:
    return CurrentWorkspaceObject().has(_name(name))


def Blobs() -> list[str]:
    """Names of the blobs of the current workspace."""
    return CurrentWorkspaceObject().blobs()


def RemoveBlob(name: Any) -> bool:
    ws = CurrentWorkspaceObject()
    key = _name(name)
    if not ws.has(key):
        return False
    ws.remove(key)
    return True


def _parsed(value: Any, cls: type[Any]) -> Any:
    """``value`` parsed as a ``cls`` message when it is a serialized one (Caffe2's functions took
    StringifyProto'd bytes as well as messages)."""
    if isinstance(value, bytes):
        msg = cls()
        msg.ParseFromString(value)
        return msg
    return value


def _net_def(net: Net | pb.NetDef | bytes) -> pb.NetDef:
    net = _parsed(net, pb.NetDef)
    if isinstance(net, Net):
        return net.ToNetDef()
    if isinstance(net, pb.NetDef):
        return net
    raise WorkspaceError(f"expected a core.Net or a NetDef, got {type(net).__name__}")


def _net_name(net: Any) -> str:
    if isinstance(net, Net):
        return net.Name()
    if isinstance(net, pb.NetDef):
        return net.name
    return _name(net)


def CreateNet(net: Net | pb.NetDef | bytes, overwrite: bool = False, input_blobs: Sequence[Any] | None = None) -> bool:
    """Prepare ``net`` in the current workspace under its name.

    As in Caffe2, an existing net of the same name is replaced only with ``overwrite``.
    """
    ws = CurrentWorkspaceObject()
    nd = _net_def(net)
    if not overwrite and nd.name in ws.nets():
        raise WorkspaceError(f"workspace '{_current}' already has a net '{nd.name}'; pass overwrite=True to replace it")
    for b in input_blobs or ():
        CreateBlob(b)
    # Caffe2 binds every op's inputs when the net is created: a blob that neither exists nor is
    # produced by an earlier op fails here, not at the first run.
    known = set(ws.blobs()) | _declared.get(ws, set())
    for i, op in enumerate(nd.op):
        missing = [b for b in op.input if b not in known]
        if missing:
            raise WorkspaceError(
                f"net '{nd.name}' op #{i} {op.type}: encountered non-existing input blob(s) {missing} "
                f"(feed them or pass input_blobs)"
            )
        known.update(op.output)
    with _caffe2_errors():
        ws.create_net(nd)
    _declared.setdefault(ws, set()).update(b for op in nd.op for b in op.output)
    return True


def RunNet(name: Any, num_iter: int = 1, allow_fail: bool = False) -> bool:
    """Run the net created under ``name`` (a name, Net or NetDef) ``num_iter`` times."""
    ws = CurrentWorkspaceObject()
    key = _net_name(name)
    if key not in ws.nets():
        raise WorkspaceError(
            f"workspace '{_current}' has no net '{key}'{did_you_mean(key, ws.nets())}; call CreateNet first"
        )
    prepared = ws.net(key)
    try:
        with _caffe2_errors():
            for _ in range(num_iter):
                prepared.run()
    except Exception:
        if allow_fail:
            return False
        raise
    return True


def RunNetOnce(net: Net | pb.NetDef | bytes) -> bool:
    """Prepare, run and discard ``net``."""
    with _caffe2_errors():
        CurrentWorkspaceObject().run_net_once(_net_def(net))
    return True


def RunOperatorOnce(operator: pb.OperatorDef | bytes) -> bool:
    with _caffe2_errors():
        CurrentWorkspaceObject().run_operator_once(_parsed(operator, pb.OperatorDef))
    return True


def RunOperatorsOnce(operators: Sequence[pb.OperatorDef]) -> bool:
    for op in operators:
        RunOperatorOnce(op)
    return True


def RunPlan(plan_or_step: Plan | ExecutionStep | pb.PlanDef | bytes) -> bool:
    """Run a plan (a core.Plan, a PlanDef, or one ExecutionStep wrapped in a plan) in the current workspace.

    As in Caffe2 the plan's nets are created in the workspace (replacing nets of
    the same name) and stay there afterwards.
    """
    plan_or_step = _parsed(plan_or_step, pb.PlanDef)
    if isinstance(plan_or_step, ExecutionStep):
        plan_or_step = Plan(plan_or_step)
    if isinstance(plan_or_step, Plan):
        plan_def = plan_or_step.Proto()
    elif isinstance(plan_or_step, pb.PlanDef):
        plan_def = plan_or_step
    else:
        raise WorkspaceError(f"RunPlan takes a core.Plan, ExecutionStep or PlanDef, got {type(plan_or_step).__name__}")
    with _caffe2_errors():
        CurrentWorkspaceObject().run_plan(plan_def)
    return True


_immediate: Workspace | None = None


def StartImmediate(i_know: bool = False) -> None:
    """Enter immediate mode: every op added to a core.Net also runs at once in a separate workspace."""
    global _immediate
    with _lock:
        if _immediate is not None:
            _immediate.close()
        _immediate = Workspace("_CAFFE2_IMMEDIATE")


def StopImmediate() -> None:
    """Leave immediate mode and drop its workspace."""
    global _immediate
    with _lock:
        if _immediate is not None:
            _immediate.close()
        _immediate = None


def IsImmediate() -> bool:
    return _immediate is not None


def _immediate_ws() -> Workspace:
    if _immediate is None:
        raise WorkspaceError("immediate mode is off: call workspace.StartImmediate() first")
    return _immediate


def RunOperatorImmediate(op: pb.OperatorDef) -> bool:
    _immediate_ws().run_operator_once(op)
    return True


def FetchImmediate(name: Any) -> Any:
    ws = _immediate_ws()
    key = _name(name)
    if not ws.has(key):
        raise MissingBlobError(f"Can't find blob: {key} (immediate workspace)")
    return ws.fetch(key)


def FeedImmediate(name: Any, arr: Any, device_option: pb.DeviceOption | None = None) -> bool:
    _immediate_ws().feed(_name(name), arr)
    return True


def ImmediateBlobs() -> list[str]:
    return _immediate_ws().blobs()


class BackgroundPlan:
    """A plan running on its own thread (RunPlanInBackground): is_done(), is_succeeded(), wait()."""

    def __init__(self, plan_def: pb.PlanDef, ws: Workspace) -> None:
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(plan_def, ws), name=f"plan-{plan_def.name}")
        self._thread.start()

    def _run(self, plan_def: pb.PlanDef, ws: Workspace) -> None:
        try:
            ws.run_plan(plan_def)
        except BaseException as e:  # noqa: BLE001 - reported through is_succeeded / wait
            self._error = e

    def is_done(self) -> bool:
        return not self._thread.is_alive()

    def is_succeeded(self) -> bool:
        return self.is_done() and self._error is None

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the plan; True when it finished (its error, if any, is raised)."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            return False
        if self._error is not None:
            raise self._error
        return True


def RunPlanInBackground(plan_or_step: Plan | ExecutionStep | pb.PlanDef) -> BackgroundPlan:
    """Start a plan on a background thread of the current workspace; poll the handle's is_done()."""
    if isinstance(plan_or_step, ExecutionStep):
        plan_or_step = Plan(plan_or_step)
    plan_def = plan_or_step.Proto() if isinstance(plan_or_step, Plan) else plan_or_step
    if not isinstance(plan_def, pb.PlanDef):
        raise WorkspaceError(
            f"RunPlanInBackground takes a core.Plan, ExecutionStep or PlanDef, got {type(plan_def).__name__}"
        )
    return BackgroundPlan(plan_def, CurrentWorkspaceObject())


class _BlobsView:
    """``workspace.blobs[name]`` reads, ``workspace.blobs[name] = value`` feeds."""

    def __getitem__(self, name: Any) -> Any:
        return FetchBlob(name)

    def __setitem__(self, name: Any, value: Any) -> None:
        FeedBlob(name, value)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, (str, bytes, BlobReference)) and HasBlob(name)

    def __iter__(self) -> Iterator[str]:
        return iter(Blobs())

    def __len__(self) -> int:
        return len(Blobs())

    def keys(self) -> list[str]:
        return Blobs()


blobs = _BlobsView()


def __getattr__(name: str) -> Any:
    # Caffe2's workspace.Predictor; imported on first use (it brings in asyncnet.serving).
    if name == "C":
        from asyncnet.compat import c_ext

        return c_ext
    if name == "Predictor":
        from asyncnet.compat.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'asyncnet.compat.workspace' has no attribute '{name}'")
