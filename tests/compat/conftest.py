"""Compat tests share Caffe2-style global state: start each test from a clean default workspace."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from asyncnet.compat import workspace
from asyncnet.registry import default_registry


@pytest.fixture(autouse=True)
def clean_default_workspace() -> Iterator[None]:
    workspace.SwitchWorkspace("default")
    workspace.ResetWorkspace()
    # brew sets engine CUDNN as Caffe2 did; the registry logs each fallback once per
    # process, and other tests assert on that log line, so leave the log state as found.
    warned = set(default_registry()._warned)
    yield
    default_registry()._warned.clear()
    default_registry()._warned.update(warned)
    workspace.SwitchWorkspace("default")
    workspace.ResetWorkspace()
