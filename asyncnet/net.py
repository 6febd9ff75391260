"""Preparing a NetDef: operators resolved to kernels and blob cells, once per net."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from asyncnet.errors import (
    AsyncNetError,
    BlobNotFoundError,
    NetDefinitionError,
    OperatorError,
    SchemaError,
    UnknownOperatorError,
)
from asyncnet.malloc_policy import retain_freed_memory
from asyncnet.opinfo import DeviceKey, OpInfo
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import OpRegistry, default_registry
from asyncnet.serde import arguments_to_dict

if TYPE_CHECKING:
    from asyncnet.executors import Executor, ExecutorOptions
    from asyncnet.workspace import Workspace

log = logging.getLogger(__name__)


class _Empty:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<empty>"


EMPTY: Any = _Empty()


class Blob:
    """A named cell of a workspace. Prepared ops hold cells, not names."""

    __slots__ = ("name", "value")

    def __init__(self, name: str) -> None:
        self.name = name
        self.value: Any = EMPTY

    def __repr__(self) -> str:
        return f"Blob({self.name!r})"


def _make_step(kernel: Any, inputs: Sequence[Blob], outputs: Sequence[Blob]) -> Callable[[], None]:
    """A no-argument closure running a sync kernel on pre-bound cells.

    Specialised by arity because the generic form (argument list comprehension, star
    call, zip over outputs) costs several times the closure call on tiny ops.
    """
    n_in, n_out = len(inputs), len(outputs)
    if n_out == 1:
        o = outputs[0]
        if n_in == 1:
            a = inputs[0]

            def step1() -> None:
                o.value = kernel(a.value)[0]

            return step1
        if n_in == 2:
            a, b = inputs

            def step2() -> None:
                o.value = kernel(a.value, b.value)[0]

            return step2
        if n_in == 3:
            a, b, c = inputs

            def step3() -> None:
                o.value = kernel(a.value, b.value, c.value)[0]

            return step3
    ins, outs = tuple(inputs), tuple(outputs)

    def step() -> None:
        result = kernel(*[x.value for x in ins])
        for cell, value in zip(outs, result):
            cell.value = value

    return step


class PreparedOp:
    """An operator ready to run: kernel plus input/output cells.

    ``step`` runs a sync kernel and stores its outputs (the executors' hot path).
    """

    __slots__ = ("index", "info", "kernel", "inputs", "outputs", "is_async", "step")

    def __init__(
        self, index: int, info: OpInfo, kernel: Any, inputs: list[Blob], outputs: list[Blob], is_async: bool
    ) -> None:
        self.index = index
        self.info = info
        self.kernel = kernel
        self.inputs = inputs
        self.outputs = outputs
        self.is_async = is_async
        self.step: Callable[[], None] = self.run if is_async else _make_step(kernel, inputs, outputs)

    def run(self) -> None:
        """Run synchronously (an async kernel's future is waited for)."""
        result = self.kernel(*[c.value for c in self.inputs])
        if self.is_async:
            result = result.result()
        for cell, value in zip(self.outputs, result):
            cell.value = value

    def start(self) -> Future[Any] | None:
        """Start the op; return the future of an async kernel (outputs not yet stored)."""
        result = self.kernel(*[c.value for c in self.inputs])
        if self.is_async:
            return result  # type: ignore[no-any-return]
        for cell, value in zip(self.outputs, result):
            cell.value = value
        return None

    def store(self, result: Sequence[Any]) -> None:
        """Store the outputs of a finished async kernel."""
        for cell, value in zip(self.outputs, result):
            cell.value = value

    def error(self, exc: BaseException) -> OperatorError:
        """Wrap a kernel exception so that it names this op."""
        info = self.info
        return OperatorError(
            index=self.index,
            op_type=info.type,
            name=info.name,
            device=str(info.device),
            debug_info=info.debug_info,
            net_name=info.net_name,
            cause=exc,
        )

    def __repr__(self) -> str:
        return f"PreparedOp({self.info.label()})"


def op_info(
    op: pb.OperatorDef,
    *,
    index: int = -1,
    registry: OpRegistry | None = None,
    net_device: pb.DeviceOption | None = None,
    net_name: str = "",
    workspace: Workspace | None = None,
) -> OpInfo:
    """Convert and validate one OperatorDef (schema, arity, in-place rules)."""
    reg = registry or default_registry()
    where = f"op #{index} {op.type}" if index >= 0 else f"op {op.type}"
    if op.name:
        where += f" '{op.name}'"
    if net_name:
        where += f" in net '{net_name}'"
    if not op.type:
        raise UnknownOperatorError(f"{where}: operator has no type")
    schema = reg.schema(op.type, where=where)
    inputs, outputs = tuple(op.input), tuple(op.output)
    problem = schema.check_arity(len(inputs), len(outputs)) or schema.check_inplace(inputs, outputs)
    if problem:
        raise SchemaError(f"{where}: {op.type} {problem}")
    dev_opt = op.device_option if op.HasField("device_option") else net_device
    return OpInfo(
        type=op.type,
        inputs=inputs,
        outputs=outputs,
        args=arguments_to_dict(op.arg, owner=where),
        schema=schema,
        name=op.name,
        engine=op.engine,
        device=DeviceKey.of(dev_opt),
        device_option=dev_opt,
        control_inputs=tuple(op.control_input),
        debug_info=op.debug_info,
        index=index,
        is_gradient_op=op.is_gradient_op,
        net_name=net_name,
        workspace=workspace,
    )


def prepare_op(info: OpInfo, workspace: Workspace, registry: OpRegistry | None = None) -> PreparedOp:
    """Create the kernel of ``info`` and bind its blobs to the workspace's cells."""
    reg = registry or default_registry()
    entry = reg.kernel(info.type, info.device.type, info.engine, where=info.label())
    try:
        kernel = entry.factory(info)
    except AsyncNetError as e:
        if info.label() in str(e):
            raise
        raise type(e)(f"{info.label()}: {e}") from e
    return PreparedOp(
        info.index,
        info,
        kernel,
        [workspace.cell(n) for n in info.inputs],
        [workspace.cell(n) for n in info.outputs],
        entry.is_async,
    )


def net_inputs(net: pb.NetDef) -> list[str]:
    """Blobs the net reads before (or without) producing them, in first-use order,
    plus declared external inputs."""
    produced: set[str] = set()
    seen: dict[str, None] = {}
    for name in net.external_input:
        seen.setdefault(name)
    for op in net.op:
        for name in (*op.input, *op.control_input):
            if name not in produced:
                seen.setdefault(name)
        produced.update(op.output)
    return list(seen)


class Net:
    """A NetDef prepared in a workspace, run by an executor.

    Args:
        net_def: the net (copied).
        workspace: where its blobs live.
        executor: executor name overriding ``net_def.type``.
        options: executor options (threads, pools, profiling).
    """

    def __init__(
        self,
        net_def: pb.NetDef,
        workspace: Workspace,
        *,
        executor: str | None = None,
        options: ExecutorOptions | None = None,
        registry: OpRegistry | None = None,
    ) -> None:
        from asyncnet.executors import ExecutorOptions, create_executor

        retain_freed_memory()
        self.net_def = pb.NetDef()
        self.net_def.CopyFrom(net_def)
        self.name = net_def.name
        self.workspace = workspace
        self.args = arguments_to_dict(net_def.arg, owner=f"net '{self.name}'")
        net_device = net_def.device_option if net_def.HasField("device_option") else None
        self.infos = [
            op_info(op, index=i, registry=registry, net_device=net_device, net_name=self.name, workspace=workspace)
            for i, op in enumerate(net_def.op)
        ]
        self.ops = [prepare_op(info, workspace, registry) for info in self.infos]
        self.input_names = net_inputs(net_def)
        produced = {o for op in net_def.op for o in op.output}
        missing_out = [o for o in net_def.external_output if o not in produced and o not in self.input_names]
        if missing_out:
            raise NetDefinitionError(f"net '{self.name}': external output(s) {missing_out} are produced by no operator")
        # A declared external input that an op of the net writes before anything reads it (init
        # nets exported by onnx-caffe2 declare their own outputs) needs no feed; Caffe2 ran them.
        read_first: set[str] = set()
        written: set[str] = set()
        for i in self.infos:
            read_first.update(n for n in (*i.inputs, *i.control_inputs) if n not in written)
            written.update(i.outputs)
        # Only blobs an op reads must exist: Caffe2 never checks a declared external input nothing reads
        # (its Python API declares e.g. str(["input"]) for AddExternalInputs(["input"])).
        self._input_cells = [workspace.cell(n) for n in self.input_names if n in read_first]
        self._first_reader = self._first_readers()
        self.options = options or ExecutorOptions()
        self.executor_name = executor if executor is not None else net_def.type
        self.executor: Executor = create_executor(self.executor_name, self, self.options)
        self._closed = False
        self._close_lock = threading.Lock()

    def _first_readers(self) -> dict[str, str]:
        readers: dict[str, str] = {}
        for info in self.infos:
            for n in (*info.inputs, *info.control_inputs):
                readers.setdefault(n, info.label())
        return readers

    @property
    def external_inputs(self) -> list[str]:
        return list(self.net_def.external_input)

    @property
    def external_outputs(self) -> list[str]:
        return list(self.net_def.external_output)

    def check_inputs(self) -> None:
        """Raise naming the first input blob that nothing produced and nobody fed."""
        for cell in self._input_cells:
            if cell.value is EMPTY:
                reader = self._first_reader.get(cell.name)
                who = f"{reader} reads" if reader else "declares external input"
                have = self.workspace.blobs()
                listing = ", ".join(have[:20]) + (" ..." if len(have) > 20 else "") if have else "none"
                raise BlobNotFoundError(
                    f"net '{self.name}': {who} blob '{cell.name}', which no earlier operator "
                    f"produces and nobody fed (workspace blobs: {listing})"
                )

    def run(self, *, timeout: float | None = None) -> None:
        """Run the net once; raises OperatorError naming the failing op."""
        self.check_inputs()
        self.executor.run(timeout=timeout)

    def cancel(self) -> None:
        """Ask a running run to stop (it raises RunCancelledError)."""
        self.executor.cancel()

    def close(self) -> None:
        """Release executor resources (threads of per-net pools)."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self.executor.close()

    def __enter__(self) -> Net:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Net({self.name!r}, {len(self.ops)} ops, executor={self.executor.name})"
