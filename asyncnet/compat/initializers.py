"""Caffe2's ``modeling.initializers``: how brew helpers create parameters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from asyncnet.compat.core import BlobReference, ScopedBlobReference
from asyncnet.errors import ArgumentError

if TYPE_CHECKING:
    from asyncnet.compat.core import Net


class Initializer:
    """Adds ``operator_name(shape=..., **kwargs)`` for a parameter to the init net."""

    def __init__(self, operator_name: str | None = None, **kwargs: Any) -> None:
        self.operator_name = operator_name
        self.operator_kwargs = kwargs

    def create_param(self, param_name: BlobReference, init_net: Net, shape: Sequence[int]) -> BlobReference:
        if self.operator_name is None:
            raise ArgumentError(f"parameter '{param_name}': the initializer has no fill operator")
        fill = getattr(init_net, self.operator_name)
        blob: BlobReference = fill([], param_name, shape=list(shape), **self.operator_kwargs)
        return blob


class ExternalInitializer(Initializer):
    """The parameter is fed from outside: nothing is added to the init net."""

    def create_param(self, param_name: BlobReference, init_net: Net, shape: Sequence[int]) -> BlobReference:
        return param_name if isinstance(param_name, BlobReference) else ScopedBlobReference(str(param_name))


def update_initializer(
    initializer_class: Any,
    operator_name_and_kwargs: tuple[str, Mapping[str, Any]] | None,
    default_operator_name_and_kwargs: tuple[str, Mapping[str, Any]],
) -> Initializer:
    """An Initializer from a class and/or an ``("XavierFill", {...})`` tuple, as Caffe2 did."""
    if isinstance(initializer_class, Initializer):
        return initializer_class
    spec = operator_name_and_kwargs if operator_name_and_kwargs is not None else default_operator_name_and_kwargs
    # Caffe2 read items 0 and 1 only: a longer tuple's extra items are ignored.
    if not (isinstance(spec, (tuple, list)) and len(spec) >= 2 and isinstance(spec[0], str)):
        raise ArgumentError(f"an initializer must be a ('FillOp', {{kwargs}}) pair, got {spec!r}")
    cls = initializer_class if initializer_class is not None else Initializer
    init: Initializer = cls(spec[0], **dict(spec[1]))
    return init
