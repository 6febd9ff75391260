"""The operator registry: schemas plus kernels keyed by (op type, device type, engine).

A *kernel factory* receives an :class:`~asyncnet.opinfo.OpInfo` once, when a net
is prepared, and returns the *kernel*: a callable taking the input values
positionally and returning a sequence of output values (at least as many as the
op has outputs; extra values are dropped). An async kernel returns a
``concurrent.futures.Future`` that resolves to that sequence.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from asyncnet.errors import SchemaError, UnknownOperatorError, did_you_mean
from asyncnet.opinfo import OpInfo
from asyncnet.schema import INF, Arg, ArityFn, InferFn, OpSchema

log = logging.getLogger(__name__)

Kernel = Callable[..., Any]
KernelFactory = Callable[[OpInfo], Kernel]

CPU = 0


@dataclass(frozen=True)
class KernelEntry:
    """A registered kernel factory and how the executors must treat it."""

    factory: KernelFactory
    device_type: int = CPU
    engine: str = ""
    is_async: bool = False


def _count_range(v: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    lo, hi = v
    return (lo, INF if hi < 0 else hi)


class OpRegistry:
    """Holds operator schemas and kernels. One default instance serves the process."""

    def __init__(self) -> None:
        self._schemas: dict[str, OpSchema] = {}
        self._kernels: dict[tuple[str, int, str], KernelEntry] = {}
        self._warned: set[tuple[str, int, str]] = set()

    # -- registration ----------------------------------------------------------

    def add_schema(self, schema: OpSchema) -> None:
        if schema.type in self._schemas:
            raise SchemaError(f"operator schema '{schema.type}' is registered twice")
        self._schemas[schema.type] = schema

    def add_kernel(
        self,
        op_type: str,
        factory: KernelFactory,
        *,
        device_type: int = CPU,
        engine: str = "",
        is_async: bool = False,
    ) -> None:
        key = (op_type, device_type, engine)
        if key in self._kernels:
            raise SchemaError(f"kernel for {op_type} (device {device_type}, engine '{engine}') is registered twice")
        self._kernels[key] = KernelEntry(factory, device_type, engine, is_async)

    def op(
        self,
        op_type: str,
        *,
        inputs: int | tuple[int, int] = 1,
        outputs: int | tuple[int, int] = 1,
        allow_inplace: bool | Collection[tuple[int, int]] | Callable[[int, int], bool] = False,
        enforce_inplace: Collection[tuple[int, int]] = (),
        args: Sequence[Arg] = (),
        arity: ArityFn | None = None,
        arity_doc: str = "",
        infer: InferFn | None = None,
        doc: str = "",
        input_names: Sequence[str] = (),
        output_names: Sequence[str] = (),
        allow_unknown_args: bool = False,
        is_async: bool = False,
        aliases: Sequence[str] = (),
    ) -> Callable[[KernelFactory], KernelFactory]:
        """Decorator registering a schema and the default CPU kernel factory together.

        ``aliases`` registers the same schema and kernel under further type names.
        """

        def deco(factory: KernelFactory) -> KernelFactory:
            for name in (op_type, *aliases):
                self.add_schema(
                    OpSchema(
                        type=name,
                        inputs=_count_range(inputs),
                        outputs=_count_range(outputs),
                        allow_inplace=allow_inplace,
                        enforce_inplace=enforce_inplace,
                        args=args,
                        arity=arity,
                        arity_doc=arity_doc,
                        infer=infer,
                        doc=doc or (factory.__doc__ or "").strip(),
                        input_names=input_names,
                        output_names=output_names,
                        allow_unknown_args=allow_unknown_args,
                    )
                )
                self.add_kernel(name, factory, is_async=is_async)
            return factory

        return deco

    # -- lookup ------------------------------------------------------------------

    def has(self, op_type: str) -> bool:
        return op_type in self._schemas

    def types(self) -> list[str]:
        """All registered op types, sorted."""
        return sorted(self._schemas)

    def schema(self, op_type: str, *, where: str = "") -> OpSchema:
        """The schema of ``op_type``; an unknown type raises with close matches."""
        try:
            return self._schemas[op_type]
        except KeyError:
            prefix = f"{where}: " if where else ""
            raise UnknownOperatorError(
                f"{prefix}unknown operator type '{op_type}'{did_you_mean(op_type, self._schemas)}"
            ) from None

    def kernels_of(self, op_type: str) -> list[KernelEntry]:
        """Every kernel registered for ``op_type`` (all devices and engines)."""
        return [e for (t, _, _), e in sorted(self._kernels.items()) if t == op_type]

    def kernel(self, op_type: str, device_type: int = CPU, engine: str = "", *, where: str = "") -> KernelEntry:
        """The kernel for (type, device, engine), falling back as Caffe2 did.

        An engine list ("DEPTHWISE_3x3,NNPACK") is tried in order; an engine or a
        non-CPU device without a kernel falls back to the default CPU kernel with
        a log line, never an error.
        """
        self.schema(op_type, where=where)
        for eng in [e.strip() for e in engine.split(",") if e.strip()]:
            entry = self._kernels.get((op_type, device_type, eng))
            if entry is not None:
                return entry
        entry = self._kernels.get((op_type, device_type, ""))
        if entry is None and device_type != CPU:
            entry = self._kernels.get((op_type, CPU, ""))
        if entry is None:
            devices = sorted({d for (t, d, _) in self._kernels if t == op_type})
            prefix = f"{where}: " if where else ""
            raise UnknownOperatorError(
                f"{prefix}operator '{op_type}' has no kernel for device type {device_type}; it has devices {devices}"
            )
        key = (op_type, device_type, engine)
        if (engine or device_type != CPU) and key not in self._warned:
            self._warned.add(key)
            log.info(
                "%s: no kernel for device %d engine '%s'; using the default %s kernel",
                op_type,
                device_type,
                engine,
                "CPU" if entry.device_type == CPU else "device",
            )
        return entry


_DEFAULT = OpRegistry()
_loaded = False
_load_lock = threading.Lock()


def register_op(op_type: str, **kwargs: Any) -> Callable[[KernelFactory], KernelFactory]:
    """Register a schema and default kernel in the default registry (see OpRegistry.op)."""
    return _DEFAULT.op(op_type, **kwargs)


def default_registry() -> OpRegistry:
    """The process-wide registry, with every module of ``asyncnet.ops`` imported."""
    global _loaded
    if not _loaded:
        with _load_lock:
            if not _loaded:
                importlib.import_module("asyncnet.ops")
                _loaded = True
    return _DEFAULT
