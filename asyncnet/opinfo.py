"""OpInfo: an OperatorDef converted once for kernels (arguments as Python values)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from asyncnet.errors import ArgumentError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.schema import REQUIRED, OpSchema

if TYPE_CHECKING:
    from asyncnet.workspace import Workspace

_MISSING: Any = object()

DEVICE_NAMES = {0: "cpu", 1: "cuda", 2: "mkldnn", 3: "opengl", 4: "opencl", 5: "ideep", 6: "hip"}


@dataclass(frozen=True)
class DeviceKey:
    """The identity of a device for scheduling: type, id and NUMA node."""

    type: int = 0
    id: int = 0
    numa: int = -1

    @classmethod
    def of(cls, opt: pb.DeviceOption | None) -> DeviceKey:
        if opt is None:
            return cls()
        numa = opt.numa_node_id if opt.HasField("numa_node_id") else -1
        return cls(int(opt.device_type), int(opt.device_id), int(numa))

    def __str__(self) -> str:
        name = DEVICE_NAMES.get(self.type, f"device_type {self.type}")
        text = f"{name}:{self.id}"
        return text + (f" (numa {self.numa})" if self.numa >= 0 else "")


@dataclass
class OpInfo:
    """What a kernel factory sees of an operator. No protobuf beyond nested NetDefs.

    Attributes:
        index: position in its net (-1 for a lone operator).
        args: argument name -> Python value, as written in the OperatorDef.
        workspace: the workspace the op runs in (control and I/O ops use it).
    """

    type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    args: dict[str, Any]
    schema: OpSchema
    name: str = ""
    engine: str = ""
    device: DeviceKey = field(default_factory=DeviceKey)
    device_option: pb.DeviceOption | None = None
    control_inputs: tuple[str, ...] = ()
    debug_info: str = ""
    index: int = -1
    is_gradient_op: bool = False
    net_name: str = ""
    workspace: Workspace | None = None

    # -- argument access (the schema supplies defaults) ---------------------

    def label(self) -> str:
        """Short human name: ``op #3 Conv 'conv1'``."""
        text = f"op #{self.index} {self.type}" if self.index >= 0 else f"op {self.type}"
        return text + (f" '{self.name}'" if self.name else "")

    def has(self, name: str) -> bool:
        """Whether the OperatorDef sets argument ``name``."""
        return name in self.args

    def arg(self, name: str, default: Any = _MISSING) -> Any:
        """Argument value, else ``default``, else the schema default (REQUIRED raises)."""
        if name in self.args:
            return self.args[name]
        if default is not _MISSING:
            return default
        d = self.schema.arg_default(name)
        if d is REQUIRED:
            raise ArgumentError(f"{self.label()}: required argument '{name}' is missing")
        return d

    def _bad(self, name: str, want: str, value: Any) -> ArgumentError:
        return ArgumentError(f"{self.label()}: argument '{name}' must be {want}, got {value!r}")

    def int_arg(self, name: str, default: Any = _MISSING) -> int:
        v = self.arg(name, default)
        if isinstance(v, bool) or not isinstance(v, int):
            if isinstance(v, float) and v.is_integer():
                return int(v)
            raise self._bad(name, "an integer", v)
        return v

    def float_arg(self, name: str, default: Any = _MISSING) -> float:
        v = self.arg(name, default)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
        raise self._bad(name, "a number", v)

    def bool_arg(self, name: str, default: Any = _MISSING) -> bool:
        v = self.arg(name, default)
        if isinstance(v, (bool, int)):
            return bool(v)
        raise self._bad(name, "0 or 1", v)

    def str_arg(self, name: str, default: Any = _MISSING) -> str:
        v = self.arg(name, default)
        if isinstance(v, bytes):
            raise self._bad(name, "UTF-8 text", v)
        if not isinstance(v, str):
            raise self._bad(name, "a string", v)
        return v

    def ints_arg(self, name: str, default: Any = _MISSING) -> list[int]:
        v = self.arg(name, default)
        if isinstance(v, int) and not isinstance(v, bool):
            return [v]
        if isinstance(v, (list, tuple)) and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            return list(v)
        raise self._bad(name, "a list of integers", v)

    def floats_arg(self, name: str, default: Any = _MISSING) -> list[float]:
        v = self.arg(name, default)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return [float(v)]
        if isinstance(v, (list, tuple)) and all(isinstance(x, (int, float)) for x in v):
            return [float(x) for x in v]
        raise self._bad(name, "a list of numbers", v)

    def strs_arg(self, name: str, default: Any = _MISSING) -> list[str]:
        v = self.arg(name, default)
        if isinstance(v, str):
            return [v]
        if isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v):
            return list(v)
        raise self._bad(name, "a list of strings", v)

    def first_of(self, names: Sequence[str], default: Any = None) -> Any:
        """Value of the first of several argument spellings that is set."""
        for n in names:
            if n in self.args:
                return self.args[n]
        return default
