"""Executors: how a prepared net's operators are run.

``NetDef.type`` picks one, with Caffe2's aliases; an explicit name overrides it.
Modules in this package register their executor classes on import.
"""

from __future__ import annotations

import importlib
import pkgutil

from asyncnet.executors.base import (
    EXECUTOR_ALIASES,
    Executor,
    ExecutorOptions,
    create_executor,
    executor_names,
    register_executor,
    resolve_executor,
)

__all__ = [
    "EXECUTOR_ALIASES",
    "Executor",
    "ExecutorOptions",
    "create_executor",
    "executor_names",
    "register_executor",
    "resolve_executor",
]

for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _mod != "base" and not _mod.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod}")
