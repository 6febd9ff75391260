"""Executor interface, options and the name -> executor table."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from asyncnet.errors import ExecutorError

if TYPE_CHECKING:
    from asyncnet.net import Net

# Caffe2's NetDef.type values and what runs them here.
EXECUTOR_ALIASES: dict[str, str] = {
    "": "simple",
    "simple": "simple",
    "async_simple": "simple",
    "dag": "async_scheduling",
    "prof_dag": "async_scheduling",
    "async_dag": "async_scheduling",
    "async_polling": "async_scheduling",
    "async_scheduling": "async_scheduling",
}


@dataclass
class ExecutorOptions:
    """Options shared by executors.

    Attributes:
        threads: worker threads per device pool (None: NetDef.num_workers, else CPU count); capped at
            4x the usable CPUs with a warning (see asyncnet.executors.pools for every thread bound).
        shared_pools: use the process-wide pools (False: pools owned by the net).
        profile: collect per-op timings (see asyncnet.profiling).
        blas_threads: a fixed BLAS thread limit for the whole of each run (needs threadpoolctl;
            the limit is process-wide while it lasts), replacing the default policy. None (the
            default) lets the executor decide: async_scheduling gives a lone BLAS-heavy chain
            (Conv, FC, MatMul, ...) the library's full thread count, and while two or more run at
            once anywhere in the process it sets OpenBLAS's process-wide count to 1, restoring it
            when at most one is left (see :mod:`asyncnet.executors.blas`). The simple executor
            runs one op at a time and leaves BLAS alone.
    """

    threads: int | None = None
    shared_pools: bool = True
    profile: bool = False
    blas_threads: int | None = None


class Executor(abc.ABC):
    """Runs a prepared net. One run at a time per executor."""

    name: ClassVar[str] = ""

    def __init__(self, net: Net, options: ExecutorOptions) -> None:
        self.net = net
        self.options = options

    @abc.abstractmethod
    def run(self, *, timeout: float | None = None) -> None:
        """Run every operator once; raise OperatorError on the first failure."""

    def cancel(self) -> None:  # noqa: B027 - optional for executors
        """Stop a run in progress (it raises RunCancelledError)."""

    def close(self) -> None:  # noqa: B027 - optional for executors
        """Release threads and other resources."""


_EXECUTORS: dict[str, type[Executor]] = {}


def register_executor(cls: type[Executor]) -> type[Executor]:
    """Class decorator adding an executor under ``cls.name``."""
    if not cls.name or cls.name in _EXECUTORS:
        raise ExecutorError(f"executor name '{cls.name}' is empty or registered twice")
    _EXECUTORS[cls.name] = cls
    return cls


def executor_names() -> list[str]:
    """Every name accepted for an executor (canonical names and Caffe2 aliases)."""
    return sorted((set(EXECUTOR_ALIASES) | set(_EXECUTORS)) - {""})


def resolve_executor(name: str) -> type[Executor]:
    """The executor class for a NetDef.type / --executor value."""
    canonical = EXECUTOR_ALIASES.get(name, name)
    try:
        return _EXECUTORS[canonical]
    except KeyError:
        raise ExecutorError(f"unknown executor '{name}'; known: {', '.join(executor_names())}") from None


def create_executor(name: str, net: Net, options: ExecutorOptions) -> Executor:
    """Instantiate the executor named ``name`` for ``net``."""
    return resolve_executor(name)(net, options)
