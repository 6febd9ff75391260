"""Build NetDefs in Python without touching protobuf.

Example:
    >>> b = NetBuilder("mlp")
    >>> x = b.input("x")
    >>> w = b.param("fc1_w", shape=[8, 4], init="XavierFill")
    >>> bias = b.param("fc1_b", shape=[8], init=0.0)
    >>> y = b.ops.Relu(b.ops.FC(x, w, bias))
    >>> b.output(y)
    >>> init_net, predict_net = b.build()

Nothing runs while building. Every op remembers the ``file:line`` of the user's
call (in ``OperatorDef.debug_info``) so that build-time and run-time errors point
at the user's code. Scopes (name and device) live on the builder object, never in
thread-local globals, so several builders can be used side by side.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeAlias

import numpy as np

from asyncnet.builder_ops import OpNamespace
from asyncnet.errors import ArgumentError, NetDefinitionError, SchemaError, UnknownOperatorError, did_you_mean
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import OpRegistry, default_registry
from asyncnet.schema import REQUIRED
from asyncnet.serde import caffe2_data_type, make_argument

__all__ = ["Blob", "BlobLike", "DeviceLike", "NetBuilder", "NetPair", "Outputs", "user_site"]


class Blob(str):
    """A blob name handed out by a :class:`NetBuilder` (a ``str``, usable anywhere a name is)."""

    __slots__ = ("builder",)

    builder: NetBuilder | None

    def __new__(cls, name: str, builder: NetBuilder | None = None) -> Blob:
        obj = super().__new__(cls, name)
        obj.builder = builder
        return obj

    @property
    def name(self) -> str:
        return str(self)

    def __repr__(self) -> str:
        return f"Blob({str.__repr__(self)})"


BlobLike: TypeAlias = "Blob | str"
Outputs: TypeAlias = "int | str | Sequence[str] | None"
DeviceLike: TypeAlias = "pb.DeviceOption | int | str | None"

_DEVICE_NAMES = {"cpu": 0, "cuda": 1, "gpu": 1, "mkldnn": 2, "opengl": 3, "opencl": 4, "ideep": 5, "hip": 6}


def user_site(skip_prefixes: tuple[str, ...] = ("asyncnet",)) -> str:
    """``file:line`` of the innermost caller outside the asyncnet package."""
    frame = sys._getframe(1)
    while frame is not None:
        mod = str(frame.f_globals.get("__name__", ""))
        if not any(mod == p or mod.startswith(p + ".") for p in skip_prefixes):
            return f"{frame.f_code.co_filename}:{frame.f_lineno}"
        frame = frame.f_back  # type: ignore[assignment]
    return "<unknown>"


def device_option(device: DeviceLike, device_id: int = 0) -> pb.DeviceOption | None:
    """A DeviceOption from a DeviceOption, a device type number or a name like ``"cuda:1"``."""
    if device is None:
        return None
    if isinstance(device, pb.DeviceOption):
        out = pb.DeviceOption()
        out.CopyFrom(device)
        return out
    if isinstance(device, bool) or not isinstance(device, (int, str)):
        raise ArgumentError(f"device must be a DeviceOption, an int or a name like 'cuda:0', got {device!r}")
    if isinstance(device, str):
        kind, _, idx = device.partition(":")
        if kind.lower() not in _DEVICE_NAMES:
            raise ArgumentError(
                f"unknown device name '{kind}'{did_you_mean(kind.lower(), _DEVICE_NAMES)}; known: {sorted(_DEVICE_NAMES)}"
            )
        if idx and not idx.isdigit():
            raise ArgumentError(f"device '{device}': the id after ':' must be a number")
        return pb.DeviceOption(device_type=_DEVICE_NAMES[kind.lower()], device_id=int(idx) if idx else device_id)
    return pb.DeviceOption(device_type=device, device_id=device_id)


@dataclass
class _PendingOp:
    op: pb.OperatorDef
    site: str


@dataclass
class _Net:
    """One net under construction (the predict net or the init net)."""

    name: str
    ops: list[_PendingOp] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    produced: set[str] = field(default_factory=set)


class NetPair(NamedTuple):
    """What :meth:`NetBuilder.build` returns: the parameter init net and the net proper."""

    init: pb.NetDef
    predict: pb.NetDef


def _fill_for(value: np.ndarray) -> str:
    kind = value.dtype.kind
    if kind == "f":
        return "GivenTensorDoubleFill" if value.dtype == np.float64 else "GivenTensorFill"
    if kind == "b":
        return "GivenTensorBoolFill"
    if kind in "iu":
        return {2: "GivenTensorInt16Fill", 8: "GivenTensorInt64Fill"}.get(value.dtype.itemsize, "GivenTensorIntFill")
    if kind in "OSU":
        return "GivenTensorStringFill"
    raise ArgumentError(f"cannot store a constant of dtype {value.dtype}")


class NetBuilder:
    """Builds a predict net and, for its parameters, an init net.

    Args:
        name: name of the predict net (the init net is ``<name>_init``).
        registry: registry validated against (default: the process registry).
        net_type: executor name stored in ``NetDef.type`` ("simple", "async_scheduling", ...).
    """

    def __init__(self, name: str = "net", *, registry: OpRegistry | None = None, net_type: str = "") -> None:
        self.name = name
        self.net_type = net_type
        self._registry = registry
        self._net = _Net(name)
        self._init = _Net(f"{name}_init")
        self._taken: set[str] = set()
        self._counters: dict[str, int] = {}
        self._scope: list[str] = []
        self._device: list[pb.DeviceOption | None] = []
        self.ops = OpNamespace(self)
        self.params: list[Blob] = []

    # -- registry / scopes -----------------------------------------------------

    @property
    def registry(self) -> OpRegistry:
        return self._registry if self._registry is not None else default_registry()

    @property
    def current_scope(self) -> str:
        """The name prefix in effect (``"enc/block1/"``, or ``""``)."""
        return "".join(s + "/" for s in self._scope)

    @contextlib.contextmanager
    def name_scope(self, prefix: str) -> Iterator[None]:
        """Prefix the names created inside with ``prefix/`` (nests)."""
        if not isinstance(prefix, str) or not prefix.strip("/"):
            raise ArgumentError(f"name_scope needs a non-empty string, got {prefix!r}")
        self._scope.append(prefix.strip("/"))
        try:
            yield
        finally:
            self._scope.pop()

    @contextlib.contextmanager
    def device_scope(self, device: DeviceLike, device_id: int = 0) -> Iterator[None]:
        """Put the ops created inside on ``device`` (a DeviceOption, type number or ``"cuda:1"``)."""
        self._device.append(device_option(device, device_id))
        try:
            yield
        finally:
            self._device.pop()

    def scoped(self, name: str) -> str:
        """``name`` with the current name scope in front."""
        return self.current_scope + name

    def _claim(self, name: str) -> Blob:
        self._taken.add(name)
        return Blob(name, self)

    def _auto_name(self, op_type: str) -> str:
        base = self.current_scope + op_type
        while True:
            k = self._counters.get(base, 0) + 1
            self._counters[base] = k
            name = f"{base}_{k}"
            if name not in self._taken:
                return name

    # -- net inputs, params, constants -------------------------------------------

    def input(self, name: str) -> Blob:
        """Declare an external input of the predict net (scoped)."""
        full = self.scoped(name)
        if full in self._net.inputs:
            raise NetDefinitionError(f"{user_site()}: net '{self.name}' already has an input '{full}'")
        self._net.inputs.append(full)
        return self._claim(full)

    def inputs(self, *names: str) -> tuple[Blob, ...]:
        """Declare several external inputs at once."""
        return tuple(self.input(n) for n in names)

    def param(
        self,
        name: str,
        shape: Sequence[int] | None = None,
        init: Any = "XavierFill",
        **init_args: Any,
    ) -> Blob:
        """A parameter: filled by the init net, an external input of the predict net.

        Args:
            name: blob name (scoped).
            shape: its shape (needed unless ``init`` is an array).
            init: a fill op type (``"XavierFill"``, ``"ConstantFill"``, ...), a Caffe2-style
                ``("GaussianFill", {"std": 0.01})`` tuple, a number (constant) or an array.
            init_args: further arguments of the fill op.
        """
        site = user_site()
        full = self.scoped(name)
        if full in self._init.produced:
            raise NetDefinitionError(f"{site}: parameter '{full}' is defined twice")
        args = dict(init_args)
        if isinstance(init, tuple) and len(init) == 2 and isinstance(init[0], str) and isinstance(init[1], Mapping):
            op_type, extra = init[0], dict(init[1])
            args = {**extra, **args}
        elif isinstance(init, str):
            op_type = init
        elif isinstance(init, (int, float)) and not isinstance(init, bool):
            op_type = "ConstantFill"
            args.setdefault("value", float(init))
        elif isinstance(init, (np.ndarray, list)):
            arr = np.asarray(init)
            if arr.dtype == np.float64 and isinstance(init, list):
                arr = arr.astype(np.float32)
            if shape is not None and tuple(shape) != arr.shape:
                raise ArgumentError(f"{site}: parameter '{full}': shape {list(shape)} but init has {list(arr.shape)}")
            op_type = _fill_for(arr)
            shape = list(arr.shape)
            args["values"] = arr
        else:
            raise ArgumentError(f"{site}: parameter '{full}': cannot initialize from {type(init).__name__}")
        if shape is None and not args.get("input_as_shape"):
            raise ArgumentError(f"{site}: parameter '{full}' needs a shape")
        if shape is not None:
            args["shape"] = [int(d) for d in shape]
        self._append(self._init, op_type, [], [full], args, site=site)
        self._net.inputs.append(full)
        blob = self._claim(full)
        self.params.append(blob)
        return blob

    def const(self, value: Any, name: str | None = None, *, dtype: Any = None) -> Blob:
        """A constant computed by the predict net itself (a GivenTensor*Fill op)."""
        site = user_site()
        arr = np.asarray(value, dtype=dtype)
        if dtype is None and arr.dtype == np.float64 and not isinstance(value, np.ndarray):
            arr = arr.astype(np.float32)
        out = self.scoped(name) if name else self._auto_name("Const")
        self._append(
            self._net, _fill_for(arr), [], [out], {"shape": list(arr.shape), "values": arr.reshape(-1)}, site=site
        )
        return self._claim(out)

    def output(self, *blobs: BlobLike) -> None:
        """Mark blobs as external outputs of the predict net (checked at build)."""
        for blob in blobs:
            if str(blob) not in self._net.outputs:
                self._net.outputs.append(str(blob))

    # -- operators -------------------------------------------------------------------

    def op(
        self,
        op_type: str,
        inputs: BlobLike | Sequence[BlobLike] = (),
        outputs: Outputs = None,
        *,
        name: str = "",
        engine: str = "",
        device: DeviceLike = None,
        control_inputs: Sequence[BlobLike] = (),
        **args: Any,
    ) -> Any:
        """Add an operator to the predict net.

        Args:
            op_type: registered operator type.
            inputs: one blob or a list of blobs (names are taken as they are).
            outputs: None (one auto-named output, or as many as the op always has),
                a count of auto-named outputs, a name or a list of names (scoped).
            name / engine / device: the OperatorDef's name, engine and device (default:
                the builder's device scope).
            args: operator arguments (validated against the schema at build).

        Returns:
            A :class:`Blob` for ops that have at most one output, else a tuple of them.
        """
        return self._add(self._net, op_type, inputs, outputs, name, engine, device, control_inputs, args)

    def init_op(
        self,
        op_type: str,
        inputs: BlobLike | Sequence[BlobLike] = (),
        outputs: Outputs = None,
        *,
        name: str = "",
        engine: str = "",
        device: DeviceLike = None,
        **args: Any,
    ) -> Any:
        """Add an operator to the init net (like :meth:`op`); its outputs become predict-net inputs."""
        out = self._add(self._init, op_type, inputs, outputs, name, engine, device, (), args)
        for blob in out if isinstance(out, tuple) else (out,):
            if blob not in self._net.inputs:
                self._net.inputs.append(str(blob))
        return out

    def _add(
        self,
        net: _Net,
        op_type: str,
        inputs: BlobLike | Sequence[BlobLike],
        outputs: Outputs,
        name: str,
        engine: str,
        device: DeviceLike,
        control_inputs: Sequence[BlobLike],
        args: dict[str, Any],
    ) -> Any:
        site = user_site()
        in_names = [str(inputs)] if isinstance(inputs, str) else [str(i) for i in inputs]
        max_out = 1
        if self.registry.has(op_type):
            schema = self.registry.schema(op_type)
            max_out = schema.outputs[1]
            default_count = schema.outputs[0] if schema.outputs[0] == schema.outputs[1] else max(schema.outputs[0], 1)
        else:
            default_count = 1  # reported at build(); keep building so all errors show up in one place
        if outputs is None:
            outputs = default_count
        if isinstance(outputs, bool):
            raise ArgumentError(f"{site}: {op_type}: outputs must be a count, a name or a list of names")
        if isinstance(outputs, int):
            base = self._auto_name(op_type)
            out_names = [base] if outputs == 1 else [f"{base}_{i}" for i in range(outputs)]
        elif isinstance(outputs, str):
            out_names = [outputs if isinstance(outputs, Blob) else self.scoped(outputs)]
        else:
            out_names = [o if isinstance(o, Blob) else self.scoped(str(o)) for o in outputs]
        dev = device_option(device) if device is not None else (self._device[-1] if self._device else None)
        self._append(
            net,
            op_type,
            in_names,
            out_names,
            args,
            site=site,
            name=name,
            engine=engine,
            device=dev,
            control_inputs=[str(c) for c in control_inputs],
        )
        blobs = tuple(self._claim(n) for n in out_names)
        if max_out <= 1 and len(blobs) == 1:
            return blobs[0]
        return blobs

    def _append(
        self,
        net: _Net,
        op_type: str,
        inputs: Sequence[str],
        outputs: Sequence[str],
        args: Mapping[str, Any],
        *,
        site: str,
        name: str = "",
        engine: str = "",
        device: pb.DeviceOption | None = None,
        control_inputs: Sequence[str] = (),
    ) -> None:
        op = pb.OperatorDef(type=op_type, input=list(inputs), output=list(outputs))
        if name:
            op.name = name
        if engine:
            op.engine = engine
        op.control_input.extend(control_inputs)
        if device is not None:
            op.device_option.CopyFrom(device)
        for key, value in args.items():
            if key == "dtype" and not isinstance(value, int):
                value = caffe2_data_type(np.dtype(value))
            try:
                op.arg.append(make_argument(key, value))
            except ArgumentError as e:
                raise ArgumentError(f"{site}: {op_type}: {e}") from e
        op.debug_info = site
        net.ops.append(_PendingOp(op, site))
        net.produced.update(outputs)

    # -- build -------------------------------------------------------------------------

    def _validate(self, net: _Net, extra_known: Sequence[str]) -> None:
        reg = self.registry
        known: dict[str, None] = dict.fromkeys((*net.inputs, *extra_known))
        for index, pending in enumerate(net.ops):
            op, site = pending.op, pending.site
            where = f"{site}: op #{index} {op.type} in net '{net.name}'"
            if not reg.has(op.type):
                raise UnknownOperatorError(
                    f"{where}: unknown operator type '{op.type}'{did_you_mean(op.type, reg.types())}"
                )
            schema = reg.schema(op.type)
            ins, outs = list(op.input), list(op.output)
            problem = (
                schema.check_arity(len(ins), len(outs))
                or schema.check_args([a.name for a in op.arg])
                or schema.check_inplace(ins, outs)
            )
            if problem:
                raise SchemaError(f"{where}: {op.type} {problem}")
            given = {a.name for a in op.arg}
            missing = [a.name for a in schema.args if a.default is REQUIRED and a.name not in given]
            if missing:
                raise ArgumentError(f"{where}: required argument(s) {missing} missing")
            for blob in (*ins, *op.control_input):
                if blob not in known:
                    raise NetDefinitionError(
                        f"{where} reads blob '{blob}', which no earlier operator produces and which is not "
                        f"declared as an input{did_you_mean(blob, known)}"
                    )
            known.update(dict.fromkeys(outs))
        for out in net.outputs:
            if out not in known:
                raise NetDefinitionError(
                    f"net '{net.name}': external output '{out}' is produced by no operator{did_you_mean(out, known)}"
                )

    @staticmethod
    def _proto(net: _Net, net_type: str) -> pb.NetDef:
        nd = pb.NetDef(name=net.name)
        if net_type:
            nd.type = net_type
        nd.op.extend(p.op for p in net.ops)
        nd.external_input.extend(net.inputs)
        nd.external_output.extend(net.outputs)
        return nd

    def build_init(self) -> pb.NetDef:
        """The validated init net (parameter fills); its outputs are the parameters."""
        self._validate(self._init, ())
        nd = self._proto(self._init, "")
        del nd.external_output[:]
        nd.external_output.extend(o for p in self._init.ops for o in p.op.output)
        return nd

    def build_predict(self) -> pb.NetDef:
        """The validated predict net (a fresh copy on every call)."""
        self._validate(self._net, ())
        return self._proto(self._net, self.net_type)

    def build(self) -> NetPair:
        """Validate both nets and return fresh copies as ``(init, predict)``."""
        return NetPair(self.build_init(), self.build_predict())

    def __repr__(self) -> str:
        return f"NetBuilder({self.name!r}, {len(self._net.ops)} ops, {len(self.params)} params)"
