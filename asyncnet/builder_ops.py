"""The typed operator namespace of a NetBuilder (``b.ops.Relu(x)``).

At run time every registered op type is an attribute; ``builder_ops.pyi``, generated
by ``tools/gen_builder_stubs.py`` from the registry, gives editors and type checkers
each op's inputs and schema arguments.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from asyncnet.errors import UnknownOpAttributeError, did_you_mean

if TYPE_CHECKING:
    from asyncnet.builder import NetBuilder


class OpNamespace:
    """``ns.Conv(x, w, b, kernel=3)`` is ``builder.op("Conv", [x, w, b], kernel=3)``."""

    def __init__(self, builder: NetBuilder) -> None:
        self._builder = builder

    def __getattr__(self, op_type: str) -> Any:
        if op_type.startswith("_"):
            raise AttributeError(op_type)
        reg = self._builder.registry
        if not reg.has(op_type):
            raise UnknownOpAttributeError(f"no operator '{op_type}' is registered{did_you_mean(op_type, reg.types())}")
        return functools.partial(_call, self._builder, op_type)

    def __dir__(self) -> list[str]:
        return self._builder.registry.types()


def _call(builder: NetBuilder, op_type: str, *inputs: Any, outputs: Any = None, **kwargs: Any) -> Any:
    return builder.op(op_type, list(inputs), outputs, **kwargs)
