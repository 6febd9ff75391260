"""The whole asyncnet exception hierarchy.

Every error the library raises on bad input derives from :class:`AsyncNetError`;
each also derives from the builtin that fits (``ValueError`` for bad content,
``LookupError``/``KeyError`` for missing names, ``RuntimeError`` for failures
while running) so that callers catching builtins keep working.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


def close_matches(name: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """Names among ``candidates`` that look like ``name`` (for did-you-mean hints)."""
    pool = list(candidates)
    found = difflib.get_close_matches(name, pool, n=n, cutoff=0.6)
    if not found:
        lowered = name.lower()
        found = [c for c in pool if c.lower() == lowered or lowered in c.lower()][:n]
    return found


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """A ``" (did you mean 'X'?)"`` suffix, or an empty string when nothing is close."""
    found = close_matches(name, candidates)
    if not found:
        return ""
    return " (did you mean " + " or ".join(repr(f) for f in found) + "?)"


class AsyncNetError(Exception):
    """Root of every error asyncnet raises on purpose."""

    def __str__(self) -> str:
        # KeyError would otherwise print its message in quotes.
        return str(self.args[0]) if self.args else self.__class__.__name__


class ParseError(AsyncNetError, ValueError):
    """A file or byte string could not be read as the expected message."""

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.source = source
        self.line = line


class TensorError(AsyncNetError, ValueError):
    """A TensorProto (or array) could not be converted: bad dims, data length, dtype."""


class ArgumentError(AsyncNetError, ValueError):
    """An operator argument is missing, of the wrong type or has a bad value."""


class SchemaError(AsyncNetError, ValueError):
    """An operator breaks its schema: arity, in-place rules, unknown argument."""


class UnknownOperatorError(AsyncNetError, LookupError):
    """No operator of that type (or for that device) is registered."""


class UnsupportedError(AsyncNetError, ValueError):
    """A well-formed feature that asyncnet deliberately does not implement."""


class BlobNotFoundError(AsyncNetError, KeyError):
    """A blob name is not in the workspace."""


class NetNotFoundError(AsyncNetError, KeyError):
    """A net name is not in the workspace."""


class NetDefinitionError(AsyncNetError, ValueError):
    """A net is inconsistent: e.g. it reads a blob nothing produces and nobody fed."""


class ShapeInferenceError(AsyncNetError, ValueError):
    """Shapes or dtypes in a net do not fit together."""


class ExecutorError(AsyncNetError, RuntimeError):
    """Executor misuse: unknown executor name, concurrent run of one net, closed executor."""


class NetBusyError(ExecutorError):
    """A net was asked to run while it is already running."""


class RunCancelledError(ExecutorError):
    """A run was cancelled from another thread."""


class RunTimeoutError(RunCancelledError, TimeoutError):
    """A run exceeded its timeout and was cancelled."""


class OperatorError(AsyncNetError, RuntimeError):
    """An operator raised while running; names the op and chains the original error.

    ``others`` holds further failures of the same run (from concurrent ops).
    """

    def __init__(
        self,
        *,
        index: int,
        op_type: str,
        name: str = "",
        device: str = "cpu",
        debug_info: str = "",
        net_name: str = "",
        cause: BaseException | None = None,
        others: Sequence[OperatorError] = (),
    ) -> None:
        self.index = index
        self.op_type = op_type
        self.name = name
        self.device = device
        self.debug_info = debug_info
        self.net_name = net_name
        self.cause = cause
        self.others = list(others)
        super().__init__(self._message())

    def _message(self) -> str:
        where = f"op #{self.index} {self.op_type}"
        if self.name:
            where += f" '{self.name}'"
        if self.net_name:
            where += f" in net '{self.net_name}'"
        where += f" on {self.device}"
        if self.debug_info:
            where += f" (created at {self.debug_info})"
        text = f"{where} failed"
        if self.cause is not None:
            text += f": {type(self.cause).__name__}: {self.cause}"
        if self.others:
            text += (
                f" [+{len(self.others)} more failure(s): "
                + "; ".join(f"op #{o.index} {o.op_type}" for o in self.others)
                + "]"
            )
        return text

    def add_others(self, others: Sequence[OperatorError]) -> None:
        """Attach further failures of the same run."""
        self.others.extend(others)
        self.args = (self._message(),)


class FileAccessError(AsyncNetError, PermissionError):
    """A net asked for a path outside the folders its IOPolicy allows (asyncnet.iopolicy)."""


class CheckpointError(AsyncNetError, ValueError):
    """A checkpoint file is truncated, corrupt or cannot be written."""


class GradientError(AsyncNetError, ValueError):
    """Gradient operators cannot be made: no gradient maker, a missing output gradient, bad versions."""


class UnknownOpAttributeError(UnknownOperatorError, AttributeError):
    """An op type looked up as an attribute (``builder.ops.X``) is not registered."""


class CompatError(AsyncNetError, RuntimeError):
    """Misuse of the Caffe2-style API where Caffe2 raised RuntimeError (call order, workspaces)."""


class WorkspaceError(CompatError):
    """Misuse of the compat workspace (RuntimeError, as Caffe2 raised)."""


class MissingBlobError(BlobNotFoundError, RuntimeError):
    """FetchBlob of a blob the workspace lacks (a KeyError and, as in Caffe2, a RuntimeError)."""


class InputError(AsyncNetError, ValueError):
    """A prediction request's inputs do not match the model (name, dtype, shape, size)."""


class ServingError(AsyncNetError, RuntimeError):
    """The Predictor or the prediction server cannot take or answer a request."""


class OverloadedError(ServingError):
    """Too many requests are running or queued; retry later (gRPC RESOURCE_EXHAUSTED)."""


class DeadlineError(ServingError, TimeoutError):
    """A request's deadline passed before its result was ready (it was not computed, or was stopped)."""


class RemoteError(ServingError):
    """A prediction server answered with an error status.

    Attributes:
        code: the gRPC status code name (``"INVALID_ARGUMENT"``, ``"UNAVAILABLE"``, ...).
        details: the server's message.
    """

    def __init__(self, message: str, *, code: str = "UNKNOWN", details: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.details = details
