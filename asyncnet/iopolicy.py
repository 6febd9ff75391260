"""Which files a net may read and write.

Every operator that touches the file system (Save, Load, DB readers and writers, text readers,
anything added later) resolves its path through :meth:`IOPolicy.check_read` or
:meth:`IOPolicy.check_write` — the one place where escapes are refused. Paths are resolved with
symlinks followed, so a link inside an allowed folder that points outside it is refused too.

The Python API keeps Caffe2's permissive default (:meth:`IOPolicy.permissive`); the command line
builds a restricted policy (:meth:`IOPolicy.restricted`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from asyncnet.errors import FileAccessError

if TYPE_CHECKING:
    from asyncnet.opinfo import OpInfo

__all__ = ["FileAccessError", "IOPolicy", "op_read_path", "op_write_path", "resolve_path"]


def resolve_path(path: str | os.PathLike[str]) -> Path:
    """``path`` made absolute with ``~`` expanded and every symlink followed (the file need not exist).

    Raises:
        FileAccessError: the path cannot be resolved (an embedded NUL byte, a symlink loop).
    """
    try:
        # strict=False: a file about to be written does not exist yet; its folder's links still resolve.
        return Path(os.path.expanduser(os.fspath(path))).resolve(strict=False)
    except (ValueError, RuntimeError, OSError) as e:
        # Python < 3.13 reports a symlink loop as RuntimeError, later versions as OSError.
        raise FileAccessError(f"cannot resolve the path {os.fspath(path)!r}: {e}") from None


def _within(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == r or path.is_relative_to(r) for r in roots)


@dataclass(frozen=True)
class IOPolicy:
    """Allowed read and write roots. ``None`` roots mean "anywhere" (Caffe2's behaviour).

    Attributes:
        read_roots: folders (resolved) under which reads are allowed; None allows any path.
        write_roots: folders (resolved) under which writes are allowed; None allows any path.
        hint: how the user widens the policy, appended to refusals (e.g. the CLI flags).
    """

    read_roots: tuple[Path, ...] | None = None
    write_roots: tuple[Path, ...] | None = None
    hint: str = field(default="pass a wider IOPolicy (read_roots/write_roots) to the Workspace", compare=False)

    @classmethod
    def permissive(cls) -> IOPolicy:
        """Any path may be read or written (Caffe2's behaviour; the Python API default)."""
        return cls()

    @classmethod
    def restricted(
        cls,
        read: Iterable[str | os.PathLike[str]],
        write: Iterable[str | os.PathLike[str]],
        *,
        hint: str = "",
    ) -> IOPolicy:
        """Reads only under ``read`` (write roots are readable too), writes only under ``write``."""
        w = tuple(dict.fromkeys(resolve_path(p) for p in write))
        r = tuple(dict.fromkeys([*(resolve_path(p) for p in read), *w]))
        return cls(read_roots=r, write_roots=w, hint=hint or cls.hint)

    @property
    def is_permissive(self) -> bool:
        return self.read_roots is None and self.write_roots is None

    def check_read(self, path: str | os.PathLike[str], *, who: str = "") -> str:
        """The resolved path if reading it is allowed; else FileAccessError naming ``who``."""
        return self._check(path, self.read_roots, "read", who)

    def check_write(self, path: str | os.PathLike[str], *, who: str = "") -> str:
        """The resolved path if writing it is allowed; else FileAccessError naming ``who``."""
        return self._check(path, self.write_roots, "write", who)

    def allows_read(self, path: str | os.PathLike[str]) -> bool:
        return self.read_roots is None or _within(resolve_path(path), self.read_roots)

    def allows_write(self, path: str | os.PathLike[str]) -> bool:
        return self.write_roots is None or _within(resolve_path(path), self.write_roots)

    def _check(self, path: str | os.PathLike[str], roots: tuple[Path, ...] | None, verb: str, who: str) -> str:
        if roots is None:
            return os.fspath(path)
        resolved = resolve_path(path)
        if _within(resolved, roots):
            return str(resolved)
        prefix = f"{who}: " if who else ""
        shown = os.fspath(path)
        via = f" (resolves to {resolved})" if str(resolved) != shown else ""
        allowed = ", ".join(str(r) for r in roots) or "nowhere"
        raise FileAccessError(
            f"{prefix}refusing to {verb} '{shown}'{via}: outside the folders allowed for {verb}s ({allowed}); "
            f"{self.hint}"
        )


def policy_of(op: OpInfo) -> IOPolicy:
    """The policy of the workspace ``op`` runs in (permissive when it has none)."""
    policy = getattr(op.workspace, "io_policy", None)
    return policy if isinstance(policy, IOPolicy) else IOPolicy.permissive()


def op_read_path(op: OpInfo, path: str | os.PathLike[str]) -> str:
    """``path`` checked for reading by the op's workspace policy; refusals name the op."""
    return policy_of(op).check_read(path, who=op.label())


def op_write_path(op: OpInfo, path: str | os.PathLike[str]) -> str:
    """``path`` checked for writing by the op's workspace policy; refusals name the op."""
    return policy_of(op).check_write(path, who=op.label())
