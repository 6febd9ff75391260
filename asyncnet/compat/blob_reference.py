"""Caffe2's BlobReference and the naming rules for blob arguments (NameScope prefixes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from asyncnet.builder_ops import UnknownOpAttributeError
from asyncnet.compat.scope import CurrentNameScope
from asyncnet.errors import ArgumentError, did_you_mean
from asyncnet.registry import default_registry

if TYPE_CHECKING:
    from asyncnet.compat.core import Net


def IsOperator(op_type: str) -> bool:
    """Whether ``op_type`` is a registered operator."""
    return default_registry().has(op_type)


def IsOperatorWithEngine(op_type: str, engine: str) -> bool:
    """Whether ``op_type`` has a kernel for ``engine`` ("DEFAULT" means the default kernel)."""
    reg = default_registry()
    if not reg.has(op_type):
        return False
    wanted = "" if engine in ("", "DEFAULT") else engine
    return any(e.engine == wanted for e in reg.kernels_of(op_type))


def unknown_operator(op_type: str) -> UnknownOpAttributeError:
    """The error for ``net.<op_type>`` when no such op is registered, with close names."""
    types = default_registry().types()
    return UnknownOpAttributeError(f"Method {op_type} is not a registered operator.{did_you_mean(op_type, types)}")


class BlobReference:
    """A blob name, optionally tied to the Net that produces it (for ``blob.Relu()`` chaining)."""

    def __init__(self, name: str | bytes | BlobReference, net: Net | None = None) -> None:
        if isinstance(name, bytes):
            name = name.decode("utf-8")
        self._name = str(name)
        self._from_net = net
        self.meta: dict[str, Any] = {}

    def __hash__(self) -> int:
        return hash(self._name)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return self._name == other
        if isinstance(other, BlobReference):
            return self._name == other._name
        return False

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __str__(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f'BlobReference("{self._name}")'

    def __add__(self, other: str) -> BlobReference:
        if not isinstance(other, str):
            raise ArgumentError(f"can only append a string to BlobReference '{self._name}', got {type(other).__name__}")
        return BlobReference(self._name + other, self._from_net)

    def __radd__(self, other: str) -> BlobReference:
        if not isinstance(other, str):
            raise ArgumentError(
                f"can only prepend a string to BlobReference '{self._name}', got {type(other).__name__}"
            )
        return BlobReference(other + self._name, self._from_net)

    def Net(self) -> Net | None:
        return self._from_net

    def GetNameScope(self) -> str:
        return self._name[: self._name.rfind("/") + 1]

    def GetUnscopedName(self) -> str:
        return self._name[self._name.rfind("/") + 1 :]

    def __getattr__(self, op_type: str) -> Callable[..., Any]:
        if op_type.startswith("__") or op_type in ("_name", "_from_net", "meta"):
            raise AttributeError(op_type)
        if self._from_net is None:
            raise AttributeError(
                f"blob reference '{self._name}' has no net source to create operator {op_type}; "
                "create the operator from an explicit net object"
            )
        if not IsOperator(op_type):
            raise unknown_operator(op_type)
        net = self._from_net

        def create(inputs: Any = None, *args: Any, **kwargs: Any) -> Any:
            extra = [] if inputs is None else rectify_blobs(inputs)
            return net._CreateAndAddToSelf(op_type, [self, *extra], *args, **kwargs)

        return create

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(default_registry().types()))


def ScopedName(name: str) -> str:
    """``name`` with the current NameScope in front."""
    return CurrentNameScope() + name


def ScopedBlobReference(name: str, net: Net | None = None) -> BlobReference:
    """A BlobReference to ``name`` in the current NameScope."""
    return BlobReference(CurrentNameScope() + name, net)


BlobLike = str | bytes | BlobReference


def rectify_blobs(blobs: Any, net: Net | None = None) -> list[BlobReference]:
    """Blob arguments as BlobReferences: strings get the NameScope, references stay."""
    if isinstance(blobs, (str, bytes)):
        name = blobs.decode("utf-8") if isinstance(blobs, bytes) else blobs
        return [ScopedBlobReference(name, net)]
    if isinstance(blobs, BlobReference):
        return [blobs]
    if isinstance(blobs, (list, tuple)):
        out: list[BlobReference] = []
        for b in blobs:
            if isinstance(b, (str, bytes)):
                out.append(ScopedBlobReference(b.decode("utf-8") if isinstance(b, bytes) else b, net))
            elif isinstance(b, BlobReference):
                out.append(b)
            else:
                raise ArgumentError(f"a blob must be a string or a BlobReference, got {type(b).__name__}: {b!r}")
        return out
    raise ArgumentError(f"blobs must be a string, a BlobReference or a list of them, got {type(blobs).__name__}")
