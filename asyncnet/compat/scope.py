"""Caffe2's ``scope`` module: thread-local name and device scopes.

Global (per-thread) state is deliberate here: Caffe2 scripts rely on it. The
idiomatic :class:`asyncnet.builder.NetBuilder` keeps its scopes on the object.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from asyncnet.errors import ArgumentError
from asyncnet.proto import caffe2_pb2 as pb

_NAMESCOPE_SEPARATOR = "/"


class _State(threading.local):
    def __init__(self) -> None:
        self.namescope = ""
        self.devicescope: pb.DeviceOption | None = None


_state = _State()


def CurrentNameScope() -> str:
    """The name prefix in effect, ending with ``/`` (or ``""``)."""
    return _state.namescope


def CurrentDeviceScope() -> pb.DeviceOption | None:
    """The DeviceOption in effect (None: no device scope)."""
    return _state.devicescope


@contextlib.contextmanager
def NameScope(prefix: str | None, reset: bool = False) -> Iterator[None]:
    """Prefix blob names with ``prefix/`` inside the block; ``reset`` starts from the root."""
    if prefix is not None and not isinstance(prefix, str):
        raise ArgumentError(f"NameScope takes a string, got {type(prefix).__name__}")
    old = _state.namescope
    add = prefix + _NAMESCOPE_SEPARATOR if prefix else ""
    _state.namescope = add if reset else old + add
    try:
        yield
    finally:
        _state.namescope = old


@contextlib.contextmanager
def EmptyNameScope() -> Iterator[None]:
    """Clear the name scope inside the block."""
    old = _state.namescope
    _state.namescope = ""
    try:
        yield
    finally:
        _state.namescope = old


@contextlib.contextmanager
def DeviceScope(scope: pb.DeviceOption | int | None, node_name: str | None = None) -> Iterator[None]:
    """Put operators created inside the block on ``scope`` (a DeviceOption)."""
    if isinstance(scope, int) and not isinstance(scope, bool):
        # Caffe2 scripts also pass a bare device type (e.g. caffe2_pb2.CPU).
        scope = pb.DeviceOption(device_type=scope)
    if scope is not None and not isinstance(scope, pb.DeviceOption):
        raise ArgumentError(f"DeviceScope takes a DeviceOption or a device type, got {type(scope).__name__}")
    old = _state.devicescope
    new = pb.DeviceOption()
    if scope is not None:
        new.CopyFrom(scope)
    if node_name:
        new.node_name = node_name
    elif old is not None and old.HasField("node_name") and not new.HasField("node_name"):
        new.node_name = old.node_name
    _state.devicescope = new
    try:
        yield
    finally:
        _state.devicescope = old
