"""More of Caffe2's ``core`` module: device helpers, GradientSlice, CreatePythonOperator, get_ssa."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from asyncnet.compat import ssa as _ssa
from asyncnet.proto import caffe2_pb2 as pb

GradientSlice = namedtuple("GradientSlice", ["indices", "values"])
"""A sparse gradient: rows ``indices`` of the parameter get ``values`` (Caffe2's core.GradientSlice)."""

_GPU_TYPES = (pb.PROTO_CUDA, pb.PROTO_HIP)


def IsGPUDeviceType(device_type: int) -> bool:
    """Whether ``device_type`` is a GPU kind (CUDA or HIP)."""
    return device_type in _GPU_TYPES


def device_option_equal(
    opt1: pb.DeviceOption | None,
    opt2: pb.DeviceOption | None,
    ignore_node_name: bool = True,
    ignore_random_seed: bool = True,
) -> bool:
    """Caffe2's comparison of two DeviceOptions (None means the default CPU option)."""
    a, b = opt1 or pb.DeviceOption(), opt2 or pb.DeviceOption()
    if not ignore_node_name and a.node_name != b.node_name:
        return False
    if not ignore_random_seed and a.random_seed != b.random_seed:
        return False
    if not a.device_type or not b.device_type:
        # An unset type means CPU, where the id does not matter.
        return a.device_type == b.device_type
    return a.device_type == b.device_type and a.device_id == b.device_id


def InferOpBlobDevices(op: pb.OperatorDef) -> tuple[list[pb.DeviceOption], list[pb.DeviceOption]]:
    """The device of each input and output of ``op``: the op's own device option (CPU kernels only)."""
    opt = op.device_option if op.HasField("device_option") else pb.DeviceOption()
    return [opt] * len(op.input), [opt] * len(op.output)


def InferOpBlobDevicesAsDict(op: pb.OperatorDef) -> tuple[dict[str, pb.DeviceOption], dict[str, pb.DeviceOption]]:
    """InferOpBlobDevices keyed by blob name."""
    ins, outs = InferOpBlobDevices(op)
    return dict(zip(op.input, ins)), dict(zip(op.output, outs))


def get_ssa(
    net: Any, blob_versions: dict[str, int] | None = None
) -> tuple[list[tuple[list[tuple[str, int]], list[tuple[str, int]]]], list[str], list[str]]:
    """Caffe2's get_ssa: per op its versioned inputs and outputs, the net's undefined inputs and its outputs."""
    proto = net.Proto() if hasattr(net, "Proto") else net
    versions = {} if blob_versions is None else blob_versions
    ssa, versions = _ssa.ssa(proto, versions)
    undef: list[str] = []
    made: set[str] = set()
    for op in proto.op:
        for b in op.input:
            if b not in made and b not in undef:
                undef.append(b)
        made.update(op.output)
    outputs = [b for b in versions if b in made]
    return ssa, undef, outputs


def CreatePythonOperator(
    f: Callable[..., Any],
    inputs: Any,
    outputs: Any,
    grad_f: Callable[..., Any] | None = None,
    pass_workspace: bool = False,
    python_func_type: Any = None,
    *args: Any,
    **kwargs: Any,
) -> pb.OperatorDef:
    """An op calling ``f(inputs, outputs)`` as Caffe2's ``Python`` op did; the function lives in this process
    only (the op type is ``InProcessPython``: net files naming ``Python`` stay refused)."""
    from asyncnet.compat.core import CreateOperator

    return CreateOperator(
        "InProcessPython",
        inputs,
        outputs,
        **python_op_arguments(f, grad_f, pass_workspace, python_func_type, args, kwargs),
    )


def python_op_arguments(
    f: Callable[..., Any],
    grad_f: Callable[..., Any] | None,
    pass_workspace: bool,
    python_func_type: Any,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
) -> dict[str, Any]:
    """The InProcessPython op's arguments for ``f`` (registered in this process) and its options."""
    from asyncnet.ops.python_op import register_python_function

    if python_func_type is not None:
        f = python_func_type(*args, **kwargs).forward  # Caffe2's class-based form
        kwargs = {}
    out = dict(kwargs)
    out["token"] = register_python_function(f)
    if grad_f is not None:
        out["grad_token"] = register_python_function(grad_f)
    if pass_workspace:
        out["pass_workspace"] = 1
    return out


_ENGINE_PREF: dict[str, Any] = {"per_op": {}, "global": {}}


def SetEnginePref(per_op_engine_pref: dict[Any, Any], global_engine_pref: dict[Any, Sequence[str]]) -> None:
    """Record engine preferences (asyncnet has one CPU kernel per op; engines fall back to it)."""
    _ENGINE_PREF["per_op"] = dict(per_op_engine_pref)
    _ENGINE_PREF["global"] = dict(global_engine_pref)


def SetGlobalEnginePref(global_engine_pref: dict[Any, Sequence[str]]) -> None:
    _ENGINE_PREF["global"] = dict(global_engine_pref)


def SetOpEnginePref(op_type: str, op_pref: dict[Any, Sequence[str]]) -> None:
    _ENGINE_PREF["per_op"][op_type] = dict(op_pref)


def _remap_list(field: Any, remap: Mapping[str, str]) -> None:
    new = [remap.get(b, b) for b in field]
    del field[:]
    field.extend(new)


def remap_op(op: pb.OperatorDef, remap: Mapping[str, str]) -> None:
    """Rename blobs of ``op`` and, as Caffe2's Clone does, inside its subnet arguments (If, While, Do)."""
    _remap_list(op.input, remap)
    _remap_list(op.output, remap)
    _remap_list(op.control_input, remap)
    for a in op.arg:
        nets = ([a.n] if a.HasField("n") else []) + list(a.nets)
        for sub in nets:
            for sub_op in sub.op:
                remap_op(sub_op, remap)
            _remap_list(sub.external_input, remap)
            _remap_list(sub.external_output, remap)


def reroute_tensor(
    net: pb.NetDef, sites: dict[int, str], name: str, new_producer: pb.OperatorDef, can_modify: Any = None
) -> int:
    """Net.reroute_tensor on a NetDef (``sites``: op index -> creation site, shifted in place)."""
    ops = net.op
    last = -1
    for t in new_producer.input:
        for idx, op in enumerate(ops):
            if t in op.output:
                last = max(last, idx)
    new_tensor = new_producer.output[0]
    ops.insert(last + 1, new_producer)
    shifted = {(i + 1 if i > last else i): s for i, s in sites.items()}
    sites.clear()
    sites.update(shifted)
    targets = list(ops) if can_modify else list(ops[last + 2 :])
    count = 0
    for op in targets:
        if can_modify and op not in can_modify:
            continue
        for k, b in enumerate(op.input):
            if b == name:
                op.input[k] = new_tensor
                count += 1
    return count


def output_to_list(op_output: Any) -> list[Any]:
    """An op's output as a list, whether it returned one BlobReference or several (Caffe2's helper)."""
    from asyncnet.compat.blob_reference import BlobReference

    if isinstance(op_output, BlobReference):
        return [op_output]
    if isinstance(op_output, (list, tuple)):
        return list(op_output)
    raise TypeError(f"output_to_list takes a BlobReference, list or tuple, got {type(op_output).__name__}")
