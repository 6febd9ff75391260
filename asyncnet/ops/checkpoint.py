"""Checkpoint operators: Save, Load, DBExists, Checkpoint (Caffe2's load_save_op semantics).

Argument names, defaults and checks follow ``caffe2/operators/load_save_op.{h,cc}``.
Paths: with ``absolute_path`` 0 (the default) the db path is the workspace's
root folder (``Workspace.root_folder`` when set, else ``.``) + ``"/"`` + ``db``,
exactly as Caffe2 concatenated them. Only the ``minidb`` and ``protodb`` db
types exist here (see :mod:`asyncnet.db`). Loading from DBReader inputs is not
supported.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.db.blobs import DEFAULT_CHUNK_SIZE, BlobAssembler, blob_name_from_key
from asyncnet.db.store import canonical_db_type, db_exists, read_records, save_checkpoint
from asyncnet.errors import ArgumentError, AsyncNetError, CheckpointError, UnsupportedError
from asyncnet.fileaccess import caffe2_db_path, file_op, reads, writes
from asyncnet.iopolicy import op_read_path, op_write_path
from asyncnet.opinfo import OpInfo
from asyncnet.ops.blob_sizes import serialization_options
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo
from asyncnet.serde import numpy_dtype

_PATH_ARGS = (
    Arg("absolute_path", 0, "use `db` as given instead of prefixing the workspace root folder"),
    Arg("db", "", "path of the db"),
    Arg("db_type", "", "minidb or protodb"),
)


def _full_path(op: OpInfo, db: str) -> str:
    return caffe2_db_path(db, absolute=op.bool_arg("absolute_path"), root=getattr(op.workspace, "root_folder", None))


def _db_type(op: OpInfo) -> str:
    kind = op.str_arg("db_type")
    if not kind:
        raise ArgumentError(f"{op.label()}: argument 'db_type' must be set (minidb or protodb)")
    try:
        return canonical_db_type(kind)
    except UnsupportedError as e:
        raise UnsupportedError(f"{op.label()}: {e}") from None


def _unique(op: OpInfo, names: list[str], what: str) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ArgumentError(f"{op.label()}: duplicated {what} '{n}'")
        seen.add(n)


def _option_chunk_sizes(op: OpInfo, names: list[str], default: int) -> dict[str, int]:
    """Per saved name, the chunk size its first matching SerializationOptions entry asks for."""
    out: dict[str, int] = {}
    for opt in serialization_options(op):
        try:
            pattern = re.compile(opt.blob_name_regex)
        except re.error as e:
            raise ArgumentError(f"{op.label()}: bad blob_name_regex {opt.blob_name_regex!r}: {e}") from e
        for name in names:
            if name in out or not pattern.fullmatch(name):
                continue
            out[name] = 0 if opt.chunk_size == -1 else (opt.chunk_size or default)
    return out


@register_op(
    "Save",
    inputs=(1, -1),
    outputs=0,
    args=(
        *_PATH_ARGS,
        Arg("strip_prefix", "", "drop everything up to and including this in each blob name"),
        Arg("blob_name_overrides", [], "names to save the inputs under"),
        Arg("chunk_size", -1, "elements per tensor chunk: -1 default (1,000,000), 0 no chunking"),
        Arg(
            "options",
            None,
            "Caffe2's SerializationOptions: the first entry whose blob_name_regex matches a saved name (empty "
            "matches all) sets its chunk_size (-1: one chunk; 0: the op's chunk_size); float_format is ignored",
        ),
    ),
    infer=lambda op, ins: [],
    doc="Save the input blobs to a db (atomically: a crash leaves the previous file).",
)
def save(op: OpInfo) -> Callable[..., Any]:
    kind = _db_type(op)
    db = op.str_arg("db")
    if not db:
        raise ArgumentError(f"{op.label()}: argument 'db' must name the db to write")
    strip = op.str_arg("strip_prefix")
    overrides = op.strs_arg("blob_name_overrides")
    if overrides and len(overrides) != len(op.inputs):
        raise ArgumentError(f"{op.label()}: blob_name_overrides has {len(overrides)} names for {len(op.inputs)} inputs")
    if overrides and strip:
        raise ArgumentError(f"{op.label()}: strip_prefix and blob_name_overrides are mutually exclusive")
    names = overrides or [blob_name_from_key(n, strip) if strip else n for n in op.inputs]
    _unique(op, names, "blob name")
    chunk = op.int_arg("chunk_size")
    # Caffe2's op argument: -1 means the default size, 0 means no chunking.
    chunk_size = DEFAULT_CHUNK_SIZE if chunk == -1 else (0 if chunk == 0 else chunk)
    if chunk_size < 0:
        raise ArgumentError(f"{op.label()}: chunk_size must be -1, 0 or positive, got {chunk}")
    path = op_write_path(op, _full_path(op, db))
    per_blob = _option_chunk_sizes(op, names, chunk_size)

    def run(*values: Any) -> tuple[()]:
        save_checkpoint(path, dict(zip(names, values)), kind, chunk_size=chunk_size, chunk_sizes=per_blob)
        return ()

    return run


file_op("Save", writes("db", db_path=True))


def _load_infer(op: OpInfo) -> list[TensorInfo]:
    # Caffe2's LoadTensorInference: the `shape` hint only describes a single output.
    shape = op.ints_arg("shape")
    if len(op.outputs) == 1 and shape:
        try:
            dtype = numpy_dtype(op.int_arg("dtype"))
        except AsyncNetError as e:
            raise ArgumentError(f"{op.label()}: argument 'dtype': {e}") from e
        return [TensorInfo(tuple(shape), dtype)]
    return [TensorInfo() for _ in op.outputs]


@register_op(
    "Load",
    inputs=(0, -1),
    outputs=(0, -1),
    args=(
        *_PATH_ARGS,
        Arg("dbs", [], "several dbs to load from"),
        Arg("add_prefix", "", "prefix added to every loaded blob name"),
        Arg("strip_prefix", "", "drop everything up to and including this in each db key"),
        Arg("keep_device", 0, "ignored: every blob loads to the CPU"),
        Arg("load_all", 0, "load every blob of the db(s) into the workspace"),
        Arg("allow_incomplete", False, "allow outputs missing from the db(s)"),
        Arg("source_blob_names", [], "db names to load into the outputs, in order"),
        Arg("shape", [], "shape hint for inference (one output)"),
        Arg("dtype", 1, "data type hint for inference"),
    ),
    infer=lambda op, ins: _load_infer(op),
    doc="Load blobs from one or more dbs into the outputs (or every blob, with load_all).",
)
def load(op: OpInfo) -> Callable[..., Any]:
    if op.inputs:
        raise UnsupportedError(f"{op.label()}: loading from DBReader inputs is not supported; use the 'db' argument")
    kind = _db_type(op)
    dbs = op.strs_arg("dbs")
    if dbs:
        if any(not d for d in dbs):
            raise ArgumentError(f"{op.label()}: db names in 'dbs' must not be empty")
        _unique(op, dbs, "db name")
    else:
        db = op.str_arg("db")
        if not db:
            raise ArgumentError(f"{op.label()}: argument 'db' or 'dbs' must name the db to read")
        dbs = [db]
    paths = [op_read_path(op, _full_path(op, d)) for d in dbs]
    strip, add = op.str_arg("strip_prefix"), op.str_arg("add_prefix")
    load_all = op.bool_arg("load_all")
    allow_incomplete = op.bool_arg("allow_incomplete")
    sources = op.strs_arg("source_blob_names")
    if sources and len(sources) != len(op.outputs):
        raise ArgumentError(f"{op.label()}: source_blob_names has {len(sources)} names for {len(op.outputs)} outputs")
    if sources and strip:
        raise ArgumentError(f"{op.label()}: strip_prefix and source_blob_names are mutually exclusive")
    if sources and load_all:
        raise ArgumentError(f"{op.label()}: load_all cannot be combined with source_blob_names")
    wanted = list(sources or op.outputs)
    if not load_all:
        _unique(op, wanted, "source blob name")
    ws = op.workspace
    if load_all and ws is None:
        raise ArgumentError(f"{op.label()}: load_all needs a workspace")
    label = op.label()

    def run() -> tuple[Any, ...]:
        owner: dict[str, str] = {}
        asm = BlobAssembler(", ".join(paths))
        filter_names = None if load_all else set(wanted)
        for path in paths:
            for where, key, value in read_records(path, kind):
                blob = blob_name_from_key(key, strip, add)
                if filter_names is not None and blob not in filter_names:
                    continue
                if owner.setdefault(blob, path) != path:
                    raise CheckpointError(f"{label}: blob '{blob}' is in both {owner[blob]} and {path}")
                asm.add(blob, asm.parse(value, f"{path} {where}"), f"{path} {where}")
        loaded = asm.result()
        if load_all:
            missing = [o for o in op.outputs if o not in loaded]
            if missing:
                raise CheckpointError(f"{label}: output blob(s) {missing} are not in {', '.join(paths)}")
            assert ws is not None
            for name, value in loaded.items():
                if name not in op.outputs:
                    ws.feed(name, value)
            return tuple(loaded[o] for o in op.outputs)
        missing = [w for w in wanted if w not in loaded]
        if missing and not allow_incomplete:
            raise CheckpointError(f"{label}: expected to load {len(wanted)} blob(s), {', '.join(paths)} lack {missing}")
        out: list[Any] = []
        for out_name, src in zip(op.outputs, wanted):
            if src in loaded:
                out.append(loaded[src])
            else:
                # Caffe2 leaves a blob it could not load untouched.
                out.append(ws.cell(out_name).value if ws is not None else None)
        return tuple(out)

    return run


file_op("Load", reads("db", db_path=True), reads("dbs", db_path=True))


@register_op(
    "DBExists",
    inputs=0,
    outputs=1,
    args=(
        Arg("absolute_path", 0, "use `db_name` as given instead of prefixing the workspace root folder"),
        Arg("db_name", "", "path of the db"),
        Arg("db_type", "", "minidb or protodb"),
    ),
    infer=lambda op, ins: [TensorInfo((), np.dtype(np.bool_))],
    doc="A scalar bool: whether the db exists.",
)
def db_exists_op(op: OpInfo) -> Callable[..., Any]:
    kind = _db_type(op)
    path = op_read_path(op, _full_path(op, op.str_arg("db_name")))

    def run() -> tuple[np.ndarray]:
        return (np.array(db_exists(path, kind)),)

    return run


file_op("DBExists", reads("db_name", db_path=True))


@register_op(
    "Checkpoint",
    inputs=(1, -1),
    outputs=0,
    args=(
        *_PATH_ARGS,
        Arg("every", 1, "save when iteration % every == 0"),
        Arg("strip_prefix", "", "as for Save"),
        Arg("blob_name_overrides", [], "as for Save"),
        Arg("chunk_size", -1, "as for Save"),
    ),
    aliases=("Snapshot",),
    infer=lambda op, ins: [],
    doc="Save inputs 1.. every `every` iterations (input 0) to db % iteration.",
)
def checkpoint(op: OpInfo) -> Callable[..., Any]:
    pattern = op.str_arg("db")
    if not pattern:
        raise ArgumentError(f"{op.label()}: argument 'db' must give a file pattern such as 'ckpt_%08d.minidb'")
    every = op.int_arg("every")
    if every <= 0:
        raise ArgumentError(f"{op.label()}: argument 'every' must be positive, got {every}")
    try:
        pattern % 0
    except (TypeError, ValueError) as e:
        raise ArgumentError(f"{op.label()}: db pattern '{pattern}' needs exactly one integer field: {e}") from None
    kind = _db_type(op)
    blob_names = list(op.inputs[1:])
    overrides = op.strs_arg("blob_name_overrides")
    if overrides and len(overrides) != len(blob_names):
        raise ArgumentError(f"{op.label()}: blob_name_overrides has {len(overrides)} names for {len(blob_names)} blobs")
    strip = op.str_arg("strip_prefix")
    names = overrides or [blob_name_from_key(n, strip) if strip else n for n in blob_names]
    _unique(op, names, "blob name")
    chunk = op.int_arg("chunk_size")
    chunk_size = DEFAULT_CHUNK_SIZE if chunk == -1 else max(chunk, 0)
    label = op.label()

    def run(iteration: Any, *values: Any) -> tuple[()]:
        it = np.asarray(iteration).reshape(-1)
        if it.size != 1 or it.dtype.kind not in "iu":
            raise ArgumentError(f"{label}: input 0 must be one integer (the iteration), got {it.dtype} x{it.size}")
        n = int(it[0])
        if n % every == 0:
            save_checkpoint(
                op_write_path(op, _full_path(op, pattern % n)), dict(zip(names, values)), kind, chunk_size=chunk_size
            )
        return ()

    return run


file_op(("Checkpoint", "Snapshot"), writes("db", db_path=True))
