"""Caffe2's ``core`` module on asyncnet: BlobReference, Net, CreateOperator, scopes.

Scripts written for ``caffe2.python.core`` run after replacing the import. Blob
naming follows Caffe2: strings are prefixed with the current NameScope,
BlobReferences are taken as they are, unnamed outputs are called
``<net name>/<OpType>`` (then ``_2``, ``_3``, ...).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from asyncnet.builder import user_site
from asyncnet.compat import c_ext as C  # noqa: N812 - Caffe2's spelling (core.C)
from asyncnet.compat import ssa as _ssa
from asyncnet.compat.blob_reference import (
    BlobReference,
    IsOperator,
    IsOperatorWithEngine,
    ScopedBlobReference,
    ScopedName,
    rectify_blobs,
    unknown_operator,
)
from asyncnet.compat.gradients import GradientRegistry, add_backward_pass
from asyncnet.compat.scope import CurrentDeviceScope, DeviceScope, EmptyNameScope, NameScope
from asyncnet.errors import ArgumentError, CompatError, NetDefinitionError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import default_registry
from asyncnet.serde import make_argument

__all__ = [
    "C",
    "output_to_list",
    "BlobReference",
    "CompatError",
    "CreateOperator",
    "DataType",
    "DeviceOption",
    "DeviceScope",
    "EmptyNameScope",
    "ExecutionStep",
    "CreatePythonOperator",
    "GetBackwardPass",
    "GradientRegistry",
    "GradientSlice",
    "InferOpBlobDevices",
    "InferOpBlobDevicesAsDict",
    "IsGPUDeviceType",
    "SetEnginePref",
    "SetGlobalEnginePref",
    "SetOpEnginePref",
    "device_option_equal",
    "get_ssa",
    "IsOperator",
    "IsOperatorWithEngine",
    "NameScope",
    "Net",
    "Plan",
    "ScopedBlobReference",
    "ScopedName",
    "caffe2_pb2",
    "execution_step",
]

caffe2_pb2 = pb


DataType = pb.TensorProto.DataType


def DeviceOption(
    device_type: int,
    device_id: int = 0,
    random_seed: int | None = None,
    node_name: str | None = None,
    numa_node_id: int | None = None,
    extra_info: Sequence[str] | None = None,
) -> pb.DeviceOption:
    """A DeviceOption proto, as Caffe2's ``core.DeviceOption``."""
    opt = pb.DeviceOption(device_type=device_type, device_id=device_id)
    if random_seed is not None:
        opt.random_seed = random_seed
    if node_name is not None:
        opt.node_name = node_name
    if numa_node_id is not None:
        opt.numa_node_id = numa_node_id
    if extra_info is not None:
        opt.extra_info.extend(extra_info)
    return opt


def CreateOperator(
    operator_type: str,
    inputs: Any,
    outputs: Any,
    name: str = "",
    control_input: Any = None,
    device_option: pb.DeviceOption | None = None,
    arg: Iterable[pb.Argument] | None = None,
    engine: str | None = None,
    debug_info: str | None = None,
    **kwargs: Any,
) -> pb.OperatorDef:
    """An OperatorDef, as Caffe2's ``core.CreateOperator`` (the type is not checked here).

    Keyword arguments become operator arguments (``None`` values are skipped); ``random_seed``
    goes into the device option. The current DeviceScope applies unless
    ``device_option`` is given.
    """
    op = pb.OperatorDef(type=operator_type, name=name)
    op.input.extend(str(b) for b in rectify_blobs(inputs))
    op.output.extend(str(b) for b in rectify_blobs(outputs))
    if control_input:
        op.control_input.extend(str(b) for b in rectify_blobs(control_input))
    if device_option is not None:
        op.device_option.CopyFrom(device_option)
    else:
        scoped = CurrentDeviceScope()
        if scoped is not None:
            op.device_option.CopyFrom(scoped)
    if engine is not None:
        op.engine = engine
    if debug_info is not None:
        op.debug_info = debug_info
    if "random_seed" in kwargs:
        op.device_option.random_seed = kwargs.pop("random_seed")
    if arg is not None:
        op.arg.extend(arg)
    for key, value in kwargs.items():
        if value is None:
            # Caffe2 skips None-valued keyword arguments.
            continue
        try:
            op.arg.append(make_argument(key, value))
        except ArgumentError as e:
            raise ArgumentError(f"{operator_type}: {e}") from e
    return op


def GetBackwardPass(operators: Sequence[pb.OperatorDef], ys: Any) -> tuple[list[pb.OperatorDef], dict[Any, Any]]:
    """``GradientRegistry.GetBackwardPass``: gradient ops and a BlobReference -> BlobReference map."""
    return GradientRegistry.GetBackwardPass(operators, ys)


class Net:
    """Caffe2's ``core.Net``: a NetDef plus naming bookkeeping; ``net.Relu(...)`` adds ops."""

    _net_names_used: set[str] = set()

    @staticmethod
    def _get_next_net_name(basename: str) -> str:
        name = basename
        idx = 1
        while name in Net._net_names_used:
            name = f"{basename}_{idx}"
            idx += 1
        Net._net_names_used.add(name)
        return name

    def __init__(self, name_or_proto: str | pb.NetDef, inplace: bool = False) -> None:
        self._registered_blob_names: set[str] = set()
        self._recreate_lookup_tables = False
        self._op_outputs: set[str] = set()
        self._external_input_map: set[str] = set()
        self._next_blob_name_ids: dict[str, int] = {}
        # Creation sites stay out of the proto (Caffe2 kept them aside too) and go
        # into debug_info only when the net is handed to asyncnet (ToNetDef).
        self._sites: dict[int, str] = {}
        if isinstance(name_or_proto, pb.NetDef):
            if inplace:
                self._net = name_or_proto
            else:
                self._net = pb.NetDef()
                self._net.CopyFrom(name_or_proto)
            self._external_input_map.update(self._net.external_input)
            for op in self._net.op:
                self._op_outputs.update(op.output)
            prefix = self._net.name + "_blob_"
            indices = []
            for op in self._net.op:
                for b in (*op.input, *op.output):
                    if b.startswith(prefix) and b[len(prefix) :].isdigit():
                        indices.append(int(b[len(prefix) :]))
            self._next_name_index = max(indices) + 1 if indices else 0
            name = self._net.name
        else:
            if not isinstance(name_or_proto, str):
                raise ArgumentError(f"Net takes a name or a NetDef, got {type(name_or_proto).__name__}")
            name = name_or_proto
            self._net = pb.NetDef()
            self._next_name_index = 0
        self._net.name = Net._get_next_net_name(name)

    # -- identity ----------------------------------------------------------------

    def Name(self) -> str:
        return self._net.name

    def __str__(self) -> str:
        return self.Name()

    def __repr__(self) -> str:
        return f"Net({self.Name()!r}, {len(self._net.op)} ops)"

    def Proto(self) -> pb.NetDef:
        """The NetDef itself (edits are seen by the net)."""
        self._recreate_lookup_tables = True
        return self._net

    def _RecreateLookupTables(self) -> None:
        self._op_outputs = {o for op in self._net.op for o in op.output}
        self._external_input_map = set(self._net.external_input)
        self._recreate_lookup_tables = False

    # -- names --------------------------------------------------------------------

    def BlobIsDefined(self, blob: Any) -> bool:
        """Whether an op of this net produces ``blob`` or it is an external input."""
        if self._recreate_lookup_tables:
            self._RecreateLookupTables()
        name = str(blob)
        return name in self._op_outputs or name in self._external_input_map

    def UsesBlob(self, blob: Any) -> bool:
        name = str(blob)
        return any(name in op.input or name in op.output for op in self._net.op)

    def GetBlobRef(self, blob_name: Any) -> BlobReference:
        name = str(blob_name)
        if not self.BlobIsDefined(name):
            raise NetDefinitionError(f"net '{self.Name()}' does not define blob '{name}'")
        return BlobReference(name, self)

    def NextName(self, prefix: str | None = None, output_id: int | None = None) -> str:
        """An unused name: ``<net>/<prefix>`` (``_2``, ``_3`` ... on clashes) or ``<net>_blob_<n>``."""
        if prefix:
            base = self._net.name + "/" + prefix
            name = base + (f":{output_id}" if output_id is not None else "")
            key = name
            index = self._next_blob_name_ids.get(key, 2)
            while self.BlobIsDefined(str(ScopedBlobReference(name))):
                name = f"{base}_{index}" + (f":{output_id}" if output_id is not None else "")
                index += 1
                self._next_blob_name_ids[key] = index
            return name
        name = f"{self._net.name}_blob_{self._next_name_index}"
        self._next_name_index += 1
        return name

    def NextBlob(self, prefix: str = "unnamed") -> BlobReference:
        """A blob name not defined nor handed out before (``prefix``, then ``prefix_auto_N``)."""
        base = str(prefix)
        name = base
        index = 0
        while name in self._registered_blob_names or self.BlobIsDefined(name):
            name = f"{base}_auto_{index}"
            index += 1
        self._registered_blob_names.add(name)
        return BlobReference(name, self)

    def NextScopedBlob(self, prefix: str = "unnamed") -> BlobReference:
        return self.NextBlob(ScopedName(prefix))

    # -- external inputs / outputs ----------------------------------------------------

    @property
    def external_inputs(self) -> list[BlobReference]:
        return [BlobReference(n, self) for n in self._net.external_input]

    @property
    def external_outputs(self) -> list[BlobReference]:
        return [BlobReference(n, self) for n in self._net.external_output]

    def AddExternalInput(self, *inputs: Any) -> Any:
        """Declare external inputs (names are taken as they are); returns their references."""
        if not inputs:
            raise ArgumentError(f"net '{self.Name()}': AddExternalInput needs at least one blob")
        if self._recreate_lookup_tables:
            self._RecreateLookupTables()
        names: list[str] = []
        for b in inputs:
            name = str(b)
            if name in self._external_input_map or name in names:
                raise NetDefinitionError(f"net '{self.Name()}' already contains an input named '{name}'")
            names.append(name)
        self._net.external_input.extend(names)
        self._external_input_map.update(names)
        refs = [BlobReference(n, self) for n in names]
        return refs[0] if len(refs) == 1 else refs

    def AddExternalInputs(self, *inputs: Any) -> Any:
        return self.AddExternalInput(*inputs)

    def AddScopedExternalInputs(self, *inputs: Any) -> list[BlobReference]:
        """Scoped external inputs; always a list (Caffe2's RNN cell code indexes it)."""
        res = self.AddExternalInput(*[ScopedName(str(b)) for b in inputs])
        return res if isinstance(res, list) else [res]

    def AddExternalOutput(self, *outputs: Any) -> None:
        """Declare external outputs; each must be produced by the net (or be an input)."""
        for b in outputs:
            if not self.BlobIsDefined(b):
                raise NetDefinitionError(f"net '{self.Name()}': external output '{b}' is not defined")
        self._net.external_output.extend(str(b) for b in outputs)

    def AddExternalOutputs(self, *outputs: Any) -> None:
        self.AddExternalOutput(*outputs)

    def AddScopedExternalOutputs(self, *outputs: Any) -> None:
        self.AddExternalOutput(*[ScopedName(str(b)) for b in outputs])

    # -- operators ----------------------------------------------------------------------

    def _ExtendOps(self, ops: Iterable[pb.OperatorDef], site: str | None = None) -> None:
        for op in ops:
            self._net.op.append(op)
            if site is not None:
                self._sites[len(self._net.op) - 1] = site
            self._op_outputs.update(op.output)

    def _CreateAndAddToSelf(self, op_type: str, inputs: Any, outputs: Any = None, **kwargs: Any) -> Any:
        site = user_site()
        in_refs = rectify_blobs(inputs)
        for ref in in_refs:
            if not self.BlobIsDefined(ref):
                self.AddExternalInput(ref)
        if outputs is None:
            outputs = self.NextName(prefix=op_type)
        elif isinstance(outputs, int) and not isinstance(outputs, bool):
            outputs = [self.NextName(prefix=op_type, output_id=i) for i in range(outputs)]
        out_refs = rectify_blobs(outputs, net=self)
        op = CreateOperator(op_type, in_refs, out_refs, **kwargs)
        self._ExtendOps([op], site)
        from asyncnet.compat import workspace as _workspace

        if _workspace.IsImmediate():
            # Caffe2's immediate mode runs each op as it is added.
            _workspace.RunOperatorImmediate(op)
        if len(op.output) == 0:
            return None
        if len(op.output) == 1:
            return BlobReference(op.output[0], self)
        return tuple(BlobReference(o, self) for o in op.output)

    def Python(
        self,
        f: Callable[..., Any],
        grad_f: Callable[..., Any] | None = None,
        python_func_type: Any = None,
        pass_workspace: bool = False,
        grad_output_indices: Any = None,
        grad_input_indices: Any = None,
    ) -> Callable[..., Any]:
        """Caffe2's ``net.Python(f)(inputs, outputs, **kwargs)``: add an op calling ``f(inputs, outputs)``
        (an in-process ``InProcessPython`` op, see CreatePythonOperator)."""
        from asyncnet.compat.core_extra import python_op_arguments

        def make(inputs: Any, outputs: Any = None, *args: Any, **kwargs: Any) -> Any:
            op_args = python_op_arguments(f, grad_f, pass_workspace, python_func_type, args, kwargs)
            return self._CreateAndAddToSelf("InProcessPython", inputs, outputs, **op_args)

        return make

    def __getattr__(self, op_type: str) -> Callable[..., Any]:
        if op_type.startswith("_"):
            raise AttributeError(op_type)
        if not IsOperator(op_type):
            raise unknown_operator(op_type)

        def create(*args: Any, **kwargs: Any) -> Any:
            return self._CreateAndAddToSelf(op_type, *args, **kwargs)

        return create

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(default_registry().types()))

    def Const(self, array: Any, blob_out: Any = None, dtype: Any = None) -> Any:
        """A constant blob filled by a GivenTensor*Fill op."""
        if isinstance(array, bool):
            return self._CreateAndAddToSelf(
                "ConstantFill", [], blob_out or 1, dtype=pb.TensorProto.BOOL, value=array, shape=[]
            )
        arr = np.array(array) if dtype is None else np.array(array, dtype=dtype)
        kind = arr.dtype
        if kind == np.int32:
            fill = "GivenTensorIntFill"
        elif kind == np.int64:
            fill = "GivenTensorInt64Fill"
        elif kind.kind in "SUO":
            fill = "GivenTensorStringFill"
        elif kind == np.bool_:
            fill = "GivenTensorBoolFill"
        else:
            fill = "GivenTensorFill"
        return self._CreateAndAddToSelf(fill, [], blob_out or 1, shape=list(arr.shape), values=arr.reshape(-1).tolist())

    # -- whole-net operations ------------------------------------------------------------------

    def AddGradientOperators(self, ys: Any, skip: int = 0) -> dict[str, BlobReference]:
        """Append the backward pass for the losses ``ys``; returns blob -> gradient blob.

        ``ys`` is a blob, a list of blobs (each seeded with ``ConstantFill(value=1)`` into
        ``<y>_autogen_grad``) or, as in Caffe2, a dict mapping each blob to the name of a
        blob that holds its gradient (fed by the caller; ``None`` means seed it).
        """
        before = len(self._net.op)
        grad_map = add_backward_pass(self._net, ys, skip=skip)
        site = user_site()
        for i in range(before, len(self._net.op)):
            self._sites[i] = site
        self._RecreateLookupTables()
        return {k: BlobReference(v, self) for k, v in grad_map.items()}

    def AppendNet(self, net: Net, device_option: pb.DeviceOption | None = None) -> Net:
        """Append the ops of ``net``; its external inputs this net does not produce become ours."""
        if not isinstance(net, Net):
            raise ArgumentError(f"AppendNet takes a Net, got {type(net).__name__}")
        if self._recreate_lookup_tables:
            self._RecreateLookupTables()
        for i in net.Proto().external_input:
            if i not in self._net.external_input and i not in self._op_outputs:
                self._net.external_input.append(i)
                self._external_input_map.add(i)
        self._net.external_output.extend(o for o in net.Proto().external_output if o not in self._net.external_output)
        ops = [copy.deepcopy(op) for op in net.Proto().op]
        if device_option is not None:
            for op in ops:
                op.device_option.CopyFrom(device_option)
        offset = len(self._net.op)
        self._ExtendOps(ops)
        for index, site in net._sites.items():
            self._sites[offset + index] = site
        return self

    def Clone(
        self,
        name: str,
        blob_remap: Mapping[Any, Any] | None = None,
        op_id_mask: Sequence[int] | None = None,
        remap_funcs: Any = None,
        keep_schema: bool = True,
        update_external_list: bool = False,
    ) -> Net:
        """A copy named ``name`` (made unique), with blobs renamed by ``blob_remap`` and
        only the ops in ``op_id_mask`` (default: all)."""
        remap = {str(k): str(v) for k, v in (blob_remap or {}).items()}
        mask = list(range(len(self._net.op))) if op_id_mask is None else list(op_id_mask)
        proto = pb.NetDef()
        proto.CopyFrom(self._net)
        proto.name = name
        del proto.op[:]
        for i in mask:
            op = pb.OperatorDef()
            op.CopyFrom(self._net.op[i])
            remap_op(op, remap)
            proto.op.append(op)
        _remap_list(proto.external_input, remap)
        _remap_list(proto.external_output, remap)
        new = Net(proto)
        new._sites = {j: self._sites[i] for j, i in enumerate(mask) if i in self._sites}
        if update_external_list:
            produced: dict[str, None] = {}
            used: set[str] = set()
            del new._net.external_input[:]
            del new._net.external_output[:]
            for op in new._net.op:
                for b in op.input:
                    if b not in produced:
                        new._net.external_input.append(b)
                    else:
                        used.add(b)
                for b in op.output:
                    produced.setdefault(b)
            new._net.external_output.extend(b for b in produced if b not in used)
            new._RecreateLookupTables()
        return new

    def ClonePartial(
        self, name: str, inputs: Any, outputs: Sequence[Any], remap_funcs: Any = None
    ) -> tuple[Net, list[BlobReference]]:
        """Clone only the ops needed to compute ``outputs`` from ``inputs``.

        ``inputs`` maps blobs of this net to the clone's input names (a list keeps the
        names). Blobs internal to the clone get the prefix ``name/``; blobs read but
        never produced stay as they are. Returns the clone and its outputs.
        """
        if isinstance(inputs, Mapping):
            pairs = [(str(k), str(v)) for k, v in inputs.items()]
        elif isinstance(inputs, list) and all(isinstance(i, tuple) and len(i) == 2 for i in inputs):
            pairs = [(str(k), str(v)) for k, v in inputs]
        else:
            pairs = [(str(i), str(i)) for i in inputs]
        input_names = dict(pairs)
        out_names = [str(o) for o in outputs]
        for o in out_names:
            if not self.BlobIsDefined(o):
                raise NetDefinitionError(f"net '{self.Name()}': output '{o}' is not defined")
        ssa, versions = _ssa.ssa(self._net, dict.fromkeys(input_names, 0))
        used = _ssa.ops_in_path(ssa, versions, list(input_names), out_names)
        producing_inputs = _ssa.ops_in_path(ssa, versions, [], list(input_names))
        overlap = sorted(set(used) & set(producing_inputs))
        if overlap:
            raise NetDefinitionError(
                f"net '{self.Name()}': cannot partially clone: op(s) {overlap} are needed for the outputs "
                "but also produce the given inputs"
            )
        undefined = {b for i in used for (b, v) in ssa[i][0] if v == 0} - set(input_names)
        prefix = f"{name}/" if name else ""

        def remap(blob: str) -> str:
            if blob in input_names:
                return input_names[blob]
            return blob if blob in undefined else prefix + blob

        mapping = {b: remap(b) for b in versions}
        new = self.Clone(name, mapping, used, remap_funcs)
        new_in = [mapping[i] for i in input_names] + sorted(undefined)
        new_out = [mapping[o] for o in out_names]
        del new._net.external_input[:]
        new._net.external_input.extend(new_in)
        del new._net.external_output[:]
        new._net.external_output.extend(new_out)
        new._RecreateLookupTables()
        return new, [BlobReference(o, new) for o in new_out]

    def reroute_tensor(self, tensor: Any, new_producer: pb.OperatorDef, can_modify: Any = None) -> int:
        """Insert ``new_producer`` after the producers of its inputs; later consumers of ``tensor`` (or those
        in ``can_modify``) read its output 0 instead. Returns how many inputs were rewritten (Caffe2's)."""
        from asyncnet.compat.core_extra import reroute_tensor

        count = reroute_tensor(self._net, self._sites, str(tensor), new_producer, can_modify)
        self._RecreateLookupTables()
        return count

    def RunAllOnGPU(self, gpu_id: int = 0, use_cudnn: bool = False) -> None:
        """Put the whole net on CUDA device ``gpu_id`` (kernels fall back to CPU in asyncnet)."""
        self._net.device_option.CopyFrom(DeviceOption(pb.PROTO_CUDA, gpu_id))
        if use_cudnn:
            for op in self._net.op:
                op.engine = "CUDNN"

    def RunAllOnCPU(self) -> None:
        self._net.device_option.CopyFrom(DeviceOption(pb.PROTO_CPU, 0))

    def PopulateProtoWithFileName(self) -> None:
        """Name each unnamed op after the ``file:line`` that created it (as Caffe2 did)."""
        for i, site in self._sites.items():
            if i < len(self._net.op) and not self._net.op[i].name:
                self._net.op[i].name = site

    def ToNetDef(self) -> pb.NetDef:
        """A copy of the NetDef with each op's creation site in ``debug_info``."""
        out = pb.NetDef()
        out.CopyFrom(self._net)
        for i, site in self._sites.items():
            if i < len(out.op) and not out.op[i].debug_info:
                out.op[i].debug_info = site
        return out


def _remap_list(field: Any, remap: Mapping[str, str]) -> None:
    new = [remap.get(b, b) for b in field]
    del field[:]
    field.extend(new)


# Plans build on Net, so their module imports this one; re-exported for ``core.Plan`` etc.
from asyncnet.compat.core_extra import (  # noqa: E402
    CreatePythonOperator,
    GradientSlice,
    InferOpBlobDevices,
    InferOpBlobDevicesAsDict,
    IsGPUDeviceType,
    SetEnginePref,
    SetGlobalEnginePref,
    SetOpEnginePref,
    device_option_equal,
    get_ssa,
    output_to_list,
    remap_op,
)
from asyncnet.compat.plan import ExecutionStep, Plan, execution_step  # noqa: E402


def __getattr__(name: str) -> Any:
    # Caffe2's core imported workspace at module level; scripts reach it as ``core.workspace``.
    # Imported on first use here (workspace imports this module).
    if name == "workspace":
        from asyncnet.compat import workspace

        return workspace
    raise AttributeError(f"module 'asyncnet.compat.core' has no attribute '{name}'")
