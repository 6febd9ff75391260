"""Caffe2's GLOO operators: rendezvous, common worlds and async collectives.

The schemas live here so that every tool knows these op types without torch; the
kernels import :mod:`asyncnet.distributed` (and with it torch) only when a net using
them is run, failing with one error that names the ``distributed`` extra.

Collectives are async ops: their kernels return a Future completed by Gloo's own
thread, so no executor worker waits while the network works.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from asyncnet.errors import ArgumentError
from asyncnet.fileaccess import file_op, writes
from asyncnet.iopolicy import op_write_path
from asyncnet.opinfo import OpInfo
from asyncnet.registry import register_op
from asyncnet.schema import UNKNOWN, Arg, TensorInfo

ENGINE = "GLOO"
DEFAULT_TIMEOUT_MS = 30_000
_TIMEOUT_DOC = "seconds a rendezvous waits for missing ranks (asyncnet; default 60)"


def _opaque(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    return [UNKNOWN] * len(op.outputs)


def _same_as_data(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    return list(ins[1 : 1 + len(op.outputs)])


def _comm(op: OpInfo, value: Any) -> Any:
    from asyncnet.distributed.comm import CommonWorld

    if not isinstance(value, CommonWorld):
        raise ArgumentError(
            f"{op.label()}: input '{op.inputs[0]}' must be a common world (from CreateCommonWorld), "
            f"got {type(value).__name__}"
        )
    return value


def _timeout_seconds(op: OpInfo) -> float:
    ms = op.int_arg("timeout_ms")
    if ms == -1:
        ms = DEFAULT_TIMEOUT_MS
    if ms <= 0:
        raise ArgumentError(f"{op.label()}: argument 'timeout_ms' must be positive (or -1 for the default), got {ms}")
    return ms / 1000.0


def _env_int(op: OpInfo, name: str, env: str) -> int:
    if op.has(name):
        return op.int_arg(name)
    text = os.environ.get(env, "")
    if not text.strip().isdigit():
        raise ArgumentError(f"{op.label()}: argument '{name}' is missing and ${env} is not set (got '{text}')")
    return int(text)


_STATUS_BLOB = Arg("status_blob", "", "Caffe2's failure status blob (not supported: failures raise)")


def _register_gloo_engine(op_type: str, factory: Callable[[OpInfo], Any], is_async: bool) -> None:
    # engine: "GLOO" is what Caffe2 nets say; a kernel under it avoids the fallback log line.
    from asyncnet.registry import _DEFAULT

    _DEFAULT.add_kernel(op_type, factory, engine=ENGINE, is_async=is_async)


# -- store handlers ---------------------------------------------------------------------------


@register_op(
    "FileStoreHandlerCreate",
    inputs=0,
    outputs=1,
    args=(
        Arg("path", None, "directory (or file) of the shared file store (default: $ASYNCNET_STORE from launch)"),
        Arg("prefix", "", "namespace of the keys, so several jobs can share a path"),
        Arg("timeout", 60.0, _TIMEOUT_DOC),
    ),
    infer=_opaque,
    output_names=("handler",),
    doc="Creates a file-backed rendezvous store handler (a torch.distributed FileStore on `path`, "
    "opened by CreateCommonWorld). Every rank must see the same path (a shared or local file system).",
)
def file_store_handler_create(op: OpInfo) -> Callable[..., Any]:
    from asyncnet.distributed.store import StoreHandler

    path_text = op.str_arg("path") if op.has("path") else os.environ.get("ASYNCNET_STORE", "")
    if not path_text:
        raise ArgumentError(f"{op.label()}: required argument 'path' is missing (and ASYNCNET_STORE is not set)")
    path = op_write_path(op, path_text)
    prefix, timeout = op.str_arg("prefix"), op.float_arg("timeout")

    def run() -> list[Any]:
        return [StoreHandler("file", path=path, prefix=prefix, timeout=timeout)]

    return run


file_op("FileStoreHandlerCreate", writes("path"))


@register_op(
    "TCPStoreHandlerCreate",
    inputs=0,
    outputs=1,
    args=(
        Arg("host", "127.0.0.1", "address of rank 0, which serves the store"),
        Arg("port", None, "TCP port of the store (required)"),
        Arg("prefix", "", "namespace of the keys"),
        Arg("timeout", 60.0, _TIMEOUT_DOC),
    ),
    infer=_opaque,
    output_names=("handler",),
    doc="Creates a TCP rendezvous store handler: asyncnet's replacement for Caffe2's RedisStoreHandlerCreate. "
    "Rank 0 serves a torch.distributed TCPStore on host:port (no Redis server needed); other ranks connect.",
)
def tcp_store_handler_create(op: OpInfo) -> Callable[..., Any]:
    from asyncnet.distributed.store import StoreHandler

    if not op.has("port"):
        raise ArgumentError(f"{op.label()}: required argument 'port' is missing")
    host, port, prefix, timeout = op.str_arg("host"), op.int_arg("port"), op.str_arg("prefix"), op.float_arg("timeout")

    def run() -> list[Any]:
        return [StoreHandler("tcp", host=host, port=port, prefix=prefix, timeout=timeout)]

    return run


# -- common worlds ----------------------------------------------------------------------------


@register_op(
    "CreateCommonWorld",
    inputs=1,
    outputs=1,
    args=(
        Arg("size", None, "number of ranks (default: $WORLD_SIZE, as `asyncnet launch` and torchrun set it)"),
        Arg("rank", None, "this process's rank, 0 <= rank < size (default: $RANK)"),
        Arg("timeout_ms", -1, "rendezvous and collective timeout in ms (-1: 30000)"),
        Arg("sync", 0, "Caffe2's synchronous-pairs flag (accepted; Gloo via torch decides)"),
        _STATUS_BLOB,
    ),
    infer=_opaque,
    input_names=("store_handler",),
    output_names=("comm_world",),
    doc="Connects `size` ranks through the store handler into a Gloo common world (a torch.distributed "
    "ProcessGroupGloo). The op's name names the world (keys are prefixed by it; it must match across "
    "ranks); without a name the output blob's name is used. Fails within the timeout when a rank never joins.",
)
def create_common_world(op: OpInfo) -> Callable[..., Any]:
    size, rank = _env_int(op, "size", "WORLD_SIZE"), _env_int(op, "rank", "RANK")
    if size < 1 or not 0 <= rank < size:
        raise ArgumentError(f"{op.label()}: need 0 <= rank < size, got rank {rank}, size {size}")
    if op.str_arg("status_blob"):
        raise ArgumentError(f"{op.label()}: 'status_blob' is not supported; collective failures raise an error")
    timeout = _timeout_seconds(op)
    name = op.name or op.outputs[0]

    def run(handler: Any) -> list[Any]:
        from asyncnet.distributed.comm import CommonWorld
        from asyncnet.distributed.store import StoreHandler

        if not isinstance(handler, StoreHandler):
            raise ArgumentError(
                f"{op.label()}: input '{op.inputs[0]}' must be a store handler "
                f"(FileStoreHandlerCreate / TCPStoreHandlerCreate), got {type(handler).__name__}"
            )
        return [CommonWorld(handler, rank, size, name, timeout)]

    return run


@register_op(
    "CloneCommonWorld",
    inputs=1,
    outputs=1,
    args=(Arg("sync", 0, "Caffe2's synchronous-pairs flag (accepted)"),),
    infer=_opaque,
    input_names=("existing_comm_world",),
    output_names=("comm_world",),
    doc="A new common world of the same ranks with connections of its own, so collectives on the two "
    "worlds can run concurrently (Caffe2's data_parallel_model cycles through such clones).",
)
def clone_common_world(op: OpInfo) -> Callable[..., Any]:
    def run(comm: Any) -> list[Any]:
        existing = _comm(op, comm)
        return [existing.clone(f"{existing.name}/{op.name or op.outputs[0]}")]

    return run


@register_op(
    "DestroyCommonWorld",
    inputs=1,
    outputs=(0, 1),
    enforce_inplace=((0, 0),),
    allow_inplace=True,
    infer=_opaque,
    doc="Closes the connections of a common world; later collectives on it fail clearly.",
)
def destroy_common_world(op: OpInfo) -> Callable[..., Any]:
    def run(comm: Any) -> list[Any]:
        if comm is not None:
            _comm(op, comm).destroy()
        return [comm]

    return run


# -- collectives --------------------------------------------------------------------------------


def _collective(
    op_type: str, doc: str, args: tuple[Arg, ...] = (), infer: Any = _same_as_data, n_out: str = "same"
) -> Callable[[Callable[[OpInfo], Any]], Callable[[OpInfo], Any]]:
    if n_out == "same":
        arity: Any = lambda n_in, n_o: n_o == n_in - 1  # noqa: E731
        arity_doc = "one output per data input"
        outputs: Any = (1, -1)
        inplace: Any = lambda i, o: i == o + 1  # noqa: E731
    else:
        arity, arity_doc, outputs, inplace = None, "", 1, False
    return register_op(
        op_type,
        inputs=(2, -1),
        outputs=outputs,
        allow_inplace=inplace,
        arity=arity,
        arity_doc=arity_doc,
        args=(
            *args,
            _STATUS_BLOB,
            Arg(
                "check",
                1,
                "agreement on op, dtypes and shapes before the data moves (asyncnet): 1 exchanges them the first "
                "time and whenever this rank's collective differs from what the ranks agreed follows the previous "
                "one (on a separate process group: a rank whose shapes change alone makes every rank fail within "
                "the timeout); 2 before every collective; 0 never (Caffe2: a size mismatch aborts inside Gloo)",
            ),
        ),
        infer=infer,
        is_async=True,
        input_names=("comm_world", "X"),
        doc=doc,
    )


@_collective(
    "Allreduce",
    "Sums the data inputs over all ranks (and over the local inputs, which must share one shape, "
    "as in Caffe2); every output gets the sum. In place allowed. Async: holds no thread while Gloo works.",
)
def allreduce(op: OpInfo) -> Callable[..., Any]:
    label, check = op.label(), _check_mode(op)
    inplace = len(op.inputs) == 2 and op.inputs[1] == op.outputs[0]

    def run(comm: Any, *xs: Any) -> Any:
        return _comm(op, comm).allreduce([_array(op, x) for x in xs], label, inplace=inplace, check=check)

    return run


@_collective(
    "AllreduceCoalesced",
    "Sums each data input over all ranks separately (output i = the sum of input i), moving them as one "
    "message per dtype: the inputs are packed into one buffer, all-reduced once and unpacked. For buckets "
    "of gradients (as DDP's), where Allreduce's several inputs would mean one tensor on several local "
    "devices, summed together. In place allowed. Async: holds no thread while Gloo works.",
)
def allreduce_coalesced(op: OpInfo) -> Callable[..., Any]:
    label, check = op.label(), _check_mode(op)

    def run(comm: Any, *xs: Any) -> Any:
        return _comm(op, comm).allreduce_coalesced([_array(op, x) for x in xs], label, check=check)

    return run


@_collective(
    "Broadcast",
    "Every rank's outputs become the `root` rank's inputs. In place allowed. Async.",
    args=(Arg("root", 0, "rank whose tensors are sent"),),
)
def broadcast(op: OpInfo) -> Callable[..., Any]:
    label, root, check = op.label(), op.int_arg("root"), _check_mode(op)

    def run(comm: Any, *xs: Any) -> Any:
        return _comm(op, comm).broadcast([_array(op, x) for x in xs], root, label, check=check)

    return run


def _allgather_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    return [TensorInfo((None,), ins[1].dtype if len(ins) > 1 else None)]


@_collective(
    "Allgather",
    "One 1-D output holding every rank's data inputs, flattened, rank after rank (Caffe2's layout). Async.",
    infer=_allgather_infer,
    n_out="one",
)
def allgather(op: OpInfo) -> Callable[..., Any]:
    label, check = op.label(), _check_mode(op)

    def run(comm: Any, *xs: Any) -> Any:
        return _comm(op, comm).allgather([_array(op, x) for x in xs], label, check=check)

    return run


def _reduce_scatter_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    x = ins[1]
    return [TensorInfo(None if x.shape is None else (None, *x.shape[1:]), x.dtype)]


@_collective(
    "ReduceScatter",
    "Sums X over all ranks and returns this rank's block of it along axis 0 (axis 0 must divide by the "
    "world size). Async.",
    infer=_reduce_scatter_infer,
    n_out="one",
)
def reduce_scatter(op: OpInfo) -> Callable[..., Any]:
    label = op.label()
    if len(op.inputs) != 2:
        raise ArgumentError(f"{op.label()}: ReduceScatter takes one data input, got {len(op.inputs) - 1}")

    check = _check_mode(op)

    def run(comm: Any, x: Any) -> Any:
        return _comm(op, comm).reduce_scatter(_array(op, x), label, check=check)

    return run


@register_op(
    "Barrier",
    inputs=1,
    outputs=0,
    args=(_STATUS_BLOB,),
    infer=_opaque,
    is_async=True,
    input_names=("comm_world",),
    doc="Completes when every rank of the common world has reached it. Async.",
)
def barrier(op: OpInfo) -> Callable[..., Any]:
    label = op.label()

    def run(comm: Any) -> Any:
        return _comm(op, comm).barrier(label)

    return run


def _check_mode(op: OpInfo) -> int:
    mode = op.int_arg("check")
    if mode not in (0, 1, 2):
        raise ArgumentError(f"{op.label()}: argument 'check' must be 0, 1 or 2, got {mode}")
    return mode


def _array(op: OpInfo, x: Any) -> Any:
    import numpy as np

    if not isinstance(x, np.ndarray):
        raise ArgumentError(f"{op.label()}: collectives take tensors, got {type(x).__name__}")
    return x


_ASYNC = {"Allreduce", "AllreduceCoalesced", "Broadcast", "Allgather", "ReduceScatter", "Barrier"}
for _t, _f in {
    "FileStoreHandlerCreate": file_store_handler_create,
    "TCPStoreHandlerCreate": tcp_store_handler_create,
    "CreateCommonWorld": create_common_world,
    "CloneCommonWorld": clone_common_world,
    "DestroyCommonWorld": destroy_common_world,
    "Allreduce": allreduce,
    "AllreduceCoalesced": allreduce_coalesced,
    "Broadcast": broadcast,
    "Allgather": allgather,
    "ReduceScatter": reduce_scatter,
    "Barrier": barrier,
}.items():
    _register_gloo_engine(_t, _f, _t in _ASYNC)
