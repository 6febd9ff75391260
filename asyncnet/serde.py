"""The one bridge between protobuf and Python values.

* ``TensorProto`` <-> numpy arrays for every Caffe2 data type.
* ``Argument`` <-> Python values.
* Reading NetDef / PlanDef / TensorProto(s) / BlobProto files, binary or text
  (detected), and writing them by extension.

Kernels never see protobuf: the loader converts arguments here, once.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np
from google.protobuf import text_format
from google.protobuf.message import DecodeError, Message

from asyncnet.errors import ParseError, TensorError
from asyncnet.proto import caffe2_pb2 as pb

M = TypeVar("M", bound=Message)

DT = pb.TensorProto.DataType

# Refuse tensors larger than this many elements before allocating anything.
MAX_TENSOR_ELEMENTS = 1 << 34
# Nesting limit for messages (NetDef inside Argument inside NetDef ...).
MAX_NESTING = 64

_NUMPY_OF: dict[int, np.dtype[Any]] = {
    DT.FLOAT: np.dtype(np.float32),
    DT.INT32: np.dtype(np.int32),
    DT.BYTE: np.dtype(np.uint8),
    DT.BOOL: np.dtype(np.bool_),
    DT.UINT8: np.dtype(np.uint8),
    DT.INT8: np.dtype(np.int8),
    DT.UINT16: np.dtype(np.uint16),
    DT.INT16: np.dtype(np.int16),
    DT.INT64: np.dtype(np.int64),
    DT.FLOAT16: np.dtype(np.float16),
    DT.DOUBLE: np.dtype(np.float64),
}

_DATATYPE_OF: dict[np.dtype[Any], int] = {
    np.dtype(np.float32): DT.FLOAT,
    np.dtype(np.int32): DT.INT32,
    np.dtype(np.bool_): DT.BOOL,
    np.dtype(np.uint8): DT.UINT8,
    np.dtype(np.int8): DT.INT8,
    np.dtype(np.uint16): DT.UINT16,
    np.dtype(np.int16): DT.INT16,
    np.dtype(np.int64): DT.INT64,
    np.dtype(np.float16): DT.FLOAT16,
    np.dtype(np.float64): DT.DOUBLE,
}

# Types whose values travel in int32_data.
_IN_INT32 = {DT.INT32, DT.BOOL, DT.UINT8, DT.INT8, DT.UINT16, DT.INT16, DT.FLOAT16}


def numpy_dtype(data_type: int) -> np.dtype[Any]:
    """The numpy dtype a Caffe2 ``TensorProto.DataType`` deserializes to."""
    if data_type == DT.STRING:
        return np.dtype(object)
    try:
        return _NUMPY_OF[data_type]
    except KeyError:
        name = DT.Name(data_type) if data_type in DT.values() else str(data_type)
        raise TensorError(
            f"TensorProto data type {name} has no array form; "
            f"supported: {', '.join(DT.Name(t) for t in sorted(_NUMPY_OF))}, STRING"
        ) from None


def caffe2_data_type(dtype: np.dtype[Any] | type) -> int:
    """The ``TensorProto.DataType`` for a numpy dtype (object/str/bytes -> STRING)."""
    dt = np.dtype(dtype)
    if dt.kind in "OSU":
        return int(DT.STRING)
    try:
        return _DATATYPE_OF[dt]
    except KeyError:
        raise TensorError(
            f"numpy dtype {dt} has no Caffe2 data type; supported: " + ", ".join(sorted(str(d) for d in _DATATYPE_OF))
        ) from None


def checked_numel(dims: Sequence[int], what: str = "tensor") -> int:
    """Element count of ``dims``, refusing negative dims and absurd sizes."""
    n = 1
    # A zero dim makes the count 0, but numpy still refuses shapes whose other dims overflow.
    nonzero = 1
    for d in dims:
        if d < 0:
            raise TensorError(f"{what} has a negative dimension in dims {list(dims)}")
        n *= d
        nonzero *= max(d, 1)
        if nonzero > MAX_TENSOR_ELEMENTS:
            raise TensorError(
                f"{what} claims dims {list(dims)} (over {MAX_TENSOR_ELEMENTS} elements); refusing to allocate"
            )
    return n


def _tensor_label(t: pb.TensorProto) -> str:
    return f"TensorProto '{t.name}'" if t.name else "TensorProto"


def _from_le_bytes(buf: bytes, dtype: np.dtype[Any], count: int, label: str, field: str) -> np.ndarray:
    expected = count * dtype.itemsize
    if len(buf) != expected:
        raise TensorError(
            f"{label}: {field} holds {len(buf)} bytes, expected {expected} ({count} x {dtype} for the dims/segment)"
        )
    return np.frombuffer(buf, dtype=dtype.newbyteorder("<"), count=count).astype(dtype, copy=True)


def _expect_len(n: int, count: int, label: str, field: str) -> None:
    if n != count:
        raise TensorError(f"{label}: {field} has {n} values but dims/segment need {count}")


def tensor_data(t: pb.TensorProto) -> np.ndarray:
    """The flat element data of ``t`` (only the segment, when one is set)."""
    label = _tensor_label(t)
    dims = list(t.dims)
    total = checked_numel(dims, label)
    if t.HasField("segment"):
        begin, end = t.segment.begin, t.segment.end
        if not 0 <= begin <= end <= total:
            raise TensorError(f"{label}: segment [{begin}, {end}) is outside its {total} elements")
        count = end - begin
    else:
        count = total
    dtype = numpy_dtype(t.data_type)
    if t.data_format == pb.TensorProto.FMT_BFLOAT16:
        if dtype != np.float32:
            raise TensorError(f"{label}: bfloat16 format is only defined for FLOAT tensors")
        raw = _from_le_bytes(t.raw_data, np.dtype(np.uint16), count, label, "raw_data (bfloat16)")
        out: np.ndarray = (raw.astype(np.uint32) << 16).view(np.float32)
        return out
    if t.data_format not in (0,):
        raise TensorError(f"{label}: unknown data_format {t.data_format}")
    dt = t.data_type
    if dt == DT.STRING:
        _expect_len(len(t.string_data), count, label, "string_data")
        out = np.empty(count, dtype=object)
        out[:] = list(t.string_data)
        return out
    if t.raw_data:
        return _from_le_bytes(t.raw_data, dtype, count, label, "raw_data")
    if dt == DT.FLOAT:
        _expect_len(len(t.float_data), count, label, "float_data")
        return np.asarray(t.float_data, dtype=np.float32)
    if dt == DT.DOUBLE:
        _expect_len(len(t.double_data), count, label, "double_data")
        return np.asarray(t.double_data, dtype=np.float64)
    if dt == DT.INT64:
        _expect_len(len(t.int64_data), count, label, "int64_data")
        return np.asarray(t.int64_data, dtype=np.int64)
    if dt == DT.BYTE:
        return _from_le_bytes(t.byte_data, dtype, count, label, "byte_data")
    if dt in _IN_INT32:
        if not t.int32_data and t.byte_data:
            # Later Caffe2 writers could keep small types as raw bytes in byte_data.
            return _from_le_bytes(t.byte_data, dtype, count, label, "byte_data")
        _expect_len(len(t.int32_data), count, label, "int32_data")
        ints = np.asarray(t.int32_data, dtype=np.int64)
        if dt == DT.FLOAT16:
            return (ints & 0xFFFF).astype(np.uint16).view(np.float16)
        if dt == DT.BOOL:
            flags: np.ndarray = ints != 0
            return flags
        info = np.iinfo(dtype)
        if ints.size and (ints.min() < info.min or ints.max() > info.max):
            raise TensorError(f"{label}: int32_data values do not fit {dtype}")
        return ints.astype(dtype)
    raise TensorError(f"{label}: unsupported data type {dt}")  # pragma: no cover - numpy_dtype raised


def tensor_to_numpy(t: pb.TensorProto) -> np.ndarray:
    """Convert a whole (unsegmented, or fully covering) TensorProto to an array."""
    data = tensor_data(t)
    dims = tuple(int(d) for d in t.dims)
    if data.size != checked_numel(dims, _tensor_label(t)):
        raise TensorError(
            f"{_tensor_label(t)} holds only segment [{t.segment.begin}, {t.segment.end}) "
            f"of dims {list(dims)}; load its chunks together"
        )
    return data.reshape(dims)


def numpy_to_tensor(value: Any, name: str | None = None, *, raw: bool = False, dtype: Any = None) -> pb.TensorProto:
    """Convert an array-like to a TensorProto (typed fields, or raw_data with ``raw``)."""
    arr = np.asarray(value, dtype=dtype)
    t = pb.TensorProto()
    if name is not None:
        t.name = name
    t.dims.extend(int(d) for d in arr.shape)
    dt = caffe2_data_type(arr.dtype)
    t.data_type = dt  # type: ignore[assignment]
    flat = arr.reshape(-1)
    if dt == DT.STRING:
        t.string_data.extend(v if isinstance(v, bytes) else str(v).encode("utf-8") for v in flat.tolist())
    elif raw:
        t.raw_data = np.ascontiguousarray(flat).astype(flat.dtype.newbyteorder("<")).tobytes()
    elif dt == DT.FLOAT:
        t.float_data.extend(flat.tolist())
    elif dt == DT.DOUBLE:
        t.double_data.extend(flat.tolist())
    elif dt == DT.INT64:
        t.int64_data.extend(flat.tolist())
    elif dt == DT.FLOAT16:
        t.int32_data.extend(flat.view(np.uint16).astype(np.int32).tolist())
    else:
        t.int32_data.extend(flat.astype(np.int32).tolist())
    return t


def tensors_to_dict(protos: Iterable[pb.TensorProto]) -> dict[str, np.ndarray]:
    """Name -> array for a TensorProtos' members (names must be unique)."""
    out: dict[str, np.ndarray] = {}
    for i, t in enumerate(protos):
        key = t.name or str(i)
        if key in out:
            raise TensorError(f"TensorProtos holds two tensors named '{key}'")
        out[key] = tensor_to_numpy(t)
    return out


# ---------------------------------------------------------------------------
# Arguments


def _decode(b: bytes) -> str | bytes:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b


def argument_value(arg: pb.Argument) -> Any:
    """The Python value of an Argument.

    Scalars: ``f`` -> float, ``i`` -> int, ``s`` -> str (bytes when not UTF-8),
    ``t`` -> ndarray, ``n`` -> NetDef. Lists likewise. An argument with only a
    name is an empty list (Caffe2 writes empty repeated fields that way).
    """
    if arg.HasField("f"):
        return float(arg.f)
    if arg.HasField("i"):
        return int(arg.i)
    if arg.HasField("s"):
        return _decode(arg.s)
    if arg.HasField("t"):
        return tensor_to_numpy(arg.t)
    if arg.HasField("n"):
        return arg.n
    if arg.floats:
        return list(arg.floats)
    if arg.ints:
        return list(arg.ints)
    if arg.strings:
        return [_decode(v) for v in arg.strings]
    if arg.tensors:
        return [tensor_to_numpy(t) for t in arg.tensors]
    if arg.nets:
        return list(arg.nets)
    if arg.qtensors:
        return list(arg.qtensors)
    return []


def nested_nets(op: pb.OperatorDef) -> list[tuple[str, pb.NetDef]]:
    """(argument name, net) of every net an op carries in its arguments (``n`` and ``nets``), in order."""
    nets: list[tuple[str, pb.NetDef]] = []
    for a in op.arg:
        if a.HasField("n"):
            nets.append((a.name, a.n))
        nets.extend((a.name, n) for n in a.nets)
    return nets


def arguments_to_dict(args: Iterable[pb.Argument], owner: str = "operator") -> dict[str, Any]:
    """Name -> value for a repeated Argument field; duplicate names are an error."""
    from asyncnet.errors import ArgumentError

    out: dict[str, Any] = {}
    for a in args:
        if a.name in out:
            raise ArgumentError(f"{owner} has argument '{a.name}' twice")
        try:
            out[a.name] = argument_value(a)
        except TensorError as e:
            raise ArgumentError(f"{owner} argument '{a.name}': {e}") from e
    return out


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _to_bytes(v: str | bytes) -> bytes:
    return v.encode("utf-8") if isinstance(v, str) else bytes(v)


def make_argument(name: str, value: Any) -> pb.Argument:
    """Encode a Python value as an Argument, following Caffe2's ``MakeArgument``.

    bool/int -> ``i``, float -> ``f``, str/bytes -> ``s``, TensorProto -> ``t``,
    NetDef -> ``n``; a numpy array is flattened to ``ints``/``floats``/``strings``
    as Caffe2 did; lists pick ``ints``/``floats``/``strings``/``tensors``/``nets``.
    """
    from asyncnet.errors import ArgumentError

    arg = pb.Argument(name=name)
    if isinstance(value, np.ndarray):
        # Whole-array fast paths: weight tensors can hold tens of millions of values.
        if value.dtype.kind == "f":
            arg.floats.extend(value.reshape(-1).tolist())
            return arg
        if value.dtype.kind in "iub":
            arg.ints.extend(value.reshape(-1).astype(np.int64).tolist())
            return arg
        value = value.reshape(-1).tolist()
    if isinstance(value, (bool, np.bool_)) or _is_int(value):
        arg.i = int(value)
    elif isinstance(value, (float, np.floating)):
        arg.f = float(value)
    elif isinstance(value, (str, bytes)):
        arg.s = _to_bytes(value)
    elif isinstance(value, pb.TensorProto):
        arg.t.CopyFrom(value)
    elif isinstance(value, pb.NetDef):
        arg.n.CopyFrom(value)
    elif isinstance(value, Message):
        # Any other message travels serialized, as Caffe2's MakeArgument did.
        arg.s = value.SerializeToString()
    elif isinstance(value, (list, tuple, range)) or (
        isinstance(value, Iterable) and not isinstance(value, (dict, Mapping))
    ):
        items = list(value)
        if all(isinstance(v, (bool, np.bool_)) or _is_int(v) for v in items):
            arg.ints.extend(int(v) for v in items)
        elif all(isinstance(v, (int, float, np.integer, np.floating)) for v in items):
            arg.floats.extend(float(v) for v in items)
        elif all(isinstance(v, (str, bytes)) for v in items):
            arg.strings.extend(_to_bytes(v) for v in items)
        elif all(isinstance(v, pb.TensorProto) for v in items):
            arg.tensors.extend(items)
        elif all(isinstance(v, pb.NetDef) for v in items):
            arg.nets.extend(items)
        elif all(isinstance(v, Message) for v in items):
            arg.strings.extend(v.SerializeToString() for v in items)
        else:
            raise ArgumentError(
                f"argument '{name}': cannot encode a list mixing {sorted({type(v).__name__ for v in items})}"
            )
    else:
        raise ArgumentError(f"argument '{name}': cannot encode a value of type {type(value).__name__}")
    return arg


# ---------------------------------------------------------------------------
# Files

_TEXT_EXTS = (".pbtxt", ".pb.txt", ".prototxt", ".txt")
_LEGACY_FIELD = re.compile(rb"\bcuda_gpu_id(\s*:)")
_TEXT_BYTES = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}


def looks_like_text(data: bytes) -> bool:
    """Heuristic: printable ASCII/UTF-8 with no control bytes means protobuf text."""
    head = data[:4096]
    if not head.strip():
        return bool(data.strip()) or False
    if any(b not in _TEXT_BYTES and b < 0x80 for b in head):
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        # A cut in the middle of a multibyte char at the 4096 boundary is fine.
        if e.start < len(head) - 4:
            return False
    return True


def _legacy_text(data: bytes) -> bytes:
    """Map old spellings to today's fields, leaving quoted strings alone."""
    if b"cuda_gpu_id" not in data:
        return data
    out = []
    for i, part in enumerate(re.split(rb'("(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\')', data)):
        out.append(part if i % 2 else _LEGACY_FIELD.sub(rb"device_id\1", part))
    return b"".join(out)


def _message_name(cls: type[Message]) -> str:
    return str(cls.DESCRIPTOR.name)


def _check_unknown(msg: Message, where: str, depth: int = 0) -> None:
    """Refuse messages carrying fields this schema does not define (wrong message type)."""
    from google.protobuf import unknown_fields

    if depth > MAX_NESTING:
        raise ParseError(f"{where}: messages nested deeper than {MAX_NESTING} levels", source=where)
    unknown = unknown_fields.UnknownFieldSet(msg)
    if len(unknown):
        numbers = sorted({f.field_number for f in unknown})  # type: ignore[attr-defined]
        raise ParseError(
            f"{where}: not a valid {_message_name(type(msg))} "
            f"({type(msg).DESCRIPTOR.full_name} has no field number(s) {numbers})",
            source=where,
        )
    for field, value in msg.ListFields():
        if field.type == field.TYPE_STRING:
            # upb hands proto2 strings that are not UTF-8 back as bytes; names must be text.
            values = value if field.is_repeated else [value]
            if any(not isinstance(v, str) for v in values):
                raise ParseError(
                    f"{where}: {type(msg).DESCRIPTOR.full_name}.{field.name} is not valid UTF-8 text", source=where
                )
            continue
        if field.message_type is None:
            continue
        if field.is_repeated:
            for item in value:
                _check_unknown(item, where, depth + 1)
        else:
            _check_unknown(value, where, depth + 1)


def _nesting_depth_ok(data: bytes) -> None:
    """Cheap guard against absurd text nesting before protobuf recurses into it."""
    depth = 0
    deepest = 0
    in_str: int | None = None
    prev = 0
    for b in data:
        if in_str is not None:
            if b == in_str and prev != 0x5C:
                in_str = None
        elif b in (0x22, 0x27):
            in_str = b
        elif b in (0x7B, 0x3C):
            depth += 1
            deepest = max(deepest, depth)
        elif b in (0x7D, 0x3E):
            depth -= 1
        prev = b
    if deepest > MAX_NESTING * 3:
        raise ParseError(f"messages nested {deepest} levels deep (limit {MAX_NESTING * 3})")


def parse_message(data: bytes, cls: type[M], *, source: str = "<bytes>", text: bool | None = None) -> M:
    """Parse ``data`` as ``cls``, detecting binary vs text unless ``text`` says which."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ParseError(f"{source}: expected bytes, got {type(data).__name__}", source=source)
    data = bytes(data)
    kind = _message_name(cls)
    if not data.strip():
        raise ParseError(f"{source}: empty file, expected a {kind}", source=source)
    is_text = looks_like_text(data) if text is None else text
    msg = cls()
    if is_text:
        try:
            _nesting_depth_ok(data)
            text_format.Parse(_legacy_text(data).decode("utf-8"), msg, allow_unknown_field=False)
        except ParseError as e:
            raise ParseError(f"{source}: {e}", source=source) from e
        except text_format.ParseError as e:
            line = e.GetLine() if hasattr(e, "GetLine") else None
            loc = f" line {line}" if line else ""
            raise ParseError(f"{source}:{loc}: not a valid text {kind}: {e}", source=source, line=line) from e
        except (UnicodeDecodeError, RecursionError, ValueError) as e:
            raise ParseError(f"{source}: not a valid text {kind}: {e}", source=source) from e
        return msg
    try:
        msg.ParseFromString(data)
    except (DecodeError, RecursionError, ValueError, RuntimeError) as e:
        raise ParseError(f"{source}: not a valid binary {kind} (truncated or corrupt?): {e}", source=source) from e
    _check_unknown(msg, source)
    return msg


def read_file_bytes(path: str | os.PathLike[str], what: str) -> bytes:
    """The bytes of a user file; missing files, folders and I/O errors become ParseError."""
    p = Path(path)
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise ParseError(f"{p}: no such file", source=str(p)) from None
    except IsADirectoryError:
        raise ParseError(f"{p}: is a directory, expected {what}", source=str(p)) from None
    except OSError as e:
        raise ParseError(f"{p}: cannot read: {e.strerror}", source=str(p)) from e


def read_json_file(path: str | os.PathLike[str]) -> Any:
    """The parsed contents of a UTF-8 JSON file; a missing file or invalid JSON becomes ParseError."""
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParseError(f"{p}: no such file", source=str(p)) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ParseError(f"{p}: not valid JSON: {e}", source=str(p)) from e


def read_message(path: str | os.PathLike[str], cls: type[M]) -> M:
    """Read a binary or text protobuf file as ``cls``."""
    data = read_file_bytes(path, f"a {_message_name(cls)} file")
    return parse_message(data, cls, source=str(Path(path)))


def is_text_path(path: str | os.PathLike[str]) -> bool:
    """Whether a path's extension asks for protobuf text format."""
    return str(path).lower().endswith(_TEXT_EXTS)


def serialize_message(msg: Message, *, text: bool) -> bytes:
    """Binary or text bytes of ``msg``."""
    if text:
        return text_format.MessageToString(msg).encode("utf-8")
    return msg.SerializeToString()


def write_message(msg: Message, path: str | os.PathLike[str]) -> None:
    """Write ``msg``: text for ``.pbtxt``/``.pb.txt``/``.prototxt``, binary otherwise.

    The file is replaced atomically (temp file in the same folder, fsync, rename).
    """
    p = Path(path)
    atomic_write_bytes(p, serialize_message(msg, text=is_text_path(p)))


def _new_file_mode(path: Path) -> int:
    """Mode for a replacement of ``path``: the old file's, else 0o666 less the process umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        pass
    umask = 0o022
    try:  # read the umask without the racy os.umask() set-and-restore
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                umask = int(line.split()[1], 8)
                break
    except (OSError, ValueError, IndexError):
        pass
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[IO[bytes]]:
    """A binary file that replaces ``path`` only when the block finishes without error.

    Written to a temp file in the same folder, flushed, fsynced and renamed over ``path`` (then the
    folder is fsynced): a crash leaves either the old file or the new one, never a mix.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _new_file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), mode)  # mkstemp makes 0600 files
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path) as f:
        f.write(data)


def read_net(path: str | os.PathLike[str]) -> pb.NetDef:
    """Read a NetDef (binary or text)."""
    return read_message(path, pb.NetDef)


def read_plan(path: str | os.PathLike[str]) -> pb.PlanDef:
    """Read a PlanDef (binary or text)."""
    return read_message(path, pb.PlanDef)


def read_tensor(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one TensorProto file as an array."""
    return tensor_to_numpy(read_message(path, pb.TensorProto))


def read_tensors(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a TensorProtos file as name -> array."""
    return tensors_to_dict(read_message(path, pb.TensorProtos).protos)


def read_blob(path: str | os.PathLike[str]) -> pb.BlobProto:
    """Read a BlobProto file."""
    return read_message(path, pb.BlobProto)
