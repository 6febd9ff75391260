"""Which operators touch files, through which arguments: one table, and an audit built on it.

Each file-touching op type declares its path arguments with one :func:`file_op` line next to
its registration::

    file_op("Save", writes("db", db_path=True))

:func:`net_file_accesses` and :func:`plan_file_accesses` then list every file a net or plan
names — inside ``If``/``While`` subnets and plan steps too — with the path resolved (symlinks
followed), so ``asyncnet info``/``check`` can show it and the command line can refuse a net
before anything runs. The ops still check each path themselves at prepare time
(:func:`asyncnet.iopolicy.op_read_path`); the audit only sees what the arguments say.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from asyncnet.errors import FileAccessError
from asyncnet.iopolicy import IOPolicy, resolve_path
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import nested_nets

__all__ = [
    "FILE_OPS",
    "FileAccess",
    "PathArg",
    "caffe2_db_path",
    "check_accesses",
    "describe_policy",
    "file_op",
    "file_ops",
    "format_accesses",
    "net_file_accesses",
    "plan_file_accesses",
    "reads",
    "writes",
]

Mode = Literal["read", "write"]


@dataclass(frozen=True)
class PathArg:
    """One argument of an op that names a file.

    Attributes:
        name: the argument (a string, or a list of strings).
        mode: "read" or "write".
        db_path: Caffe2's db rule applies: unless the op's ``absolute_path`` is set, the path is
            the workspace root folder + "/" + the value (see :func:`caffe2_db_path`).
        derive: for ops whose file is not an argument's value (Print's ``to_file`` writes
            ``<input>.log``): the paths the op will open, from its OperatorDef.
    """

    name: str
    mode: Mode
    db_path: bool = False
    derive: Callable[[pb.OperatorDef], list[str]] | None = None


def reads(name: str, *, db_path: bool = False, derive: Callable[[pb.OperatorDef], list[str]] | None = None) -> PathArg:
    """A path argument the op reads from."""
    return PathArg(name, "read", db_path, derive)


def writes(name: str, *, db_path: bool = False, derive: Callable[[pb.OperatorDef], list[str]] | None = None) -> PathArg:
    """A path argument the op writes to."""
    return PathArg(name, "write", db_path, derive)


FILE_OPS: dict[str, tuple[PathArg, ...]] = {}


def file_op(op_types: str | Iterable[str], *paths: PathArg) -> None:
    """Declare the path arguments of one op type (or of several names of one op, e.g. aliases)."""
    for t in [op_types] if isinstance(op_types, str) else list(op_types):
        FILE_OPS[t] = tuple(paths)


def caffe2_db_path(db: str, *, absolute: bool, root: str | None = None) -> str:
    """The path Caffe2's load/save ops open: ``db`` as given when ``absolute``, else ``root/db``."""
    return db if absolute else f"{root or '.'}/{db}"


@dataclass(frozen=True)
class FileAccess:
    """One file an op of a net names.

    Attributes:
        where: the op, with the subnets or plan step leading to it (``op #2 If then_net 'b' op #0 Save``).
        op_type: the op's type.
        arg: the argument holding the path.
        mode: "read" or "write".
        path: the path as the op will open it (root folder applied).
        resolved: the absolute path with symlinks followed.
    """

    where: str
    op_type: str
    arg: str
    mode: Mode
    path: str
    resolved: str

    def allowed(self, policy: IOPolicy) -> bool:
        """Whether ``policy`` lets the op do this."""
        return policy.allows_read(self.path) if self.mode == "read" else policy.allows_write(self.path)


def _arg_values(op: pb.OperatorDef, name: str) -> list[str]:
    for a in op.arg:
        if a.name == name:
            if a.HasField("s"):
                return [a.s.decode("utf-8", "replace")]
            return [s.decode("utf-8", "replace") for s in a.strings]
    return []


def _absolute(op: pb.OperatorDef) -> bool:
    return any(a.name == "absolute_path" and a.HasField("i") and a.i != 0 for a in op.arg)


def file_ops() -> dict[str, tuple[PathArg, ...]]:
    """The table, after every op module has registered (and declared its files)."""
    from asyncnet.registry import default_registry

    default_registry()
    return FILE_OPS


def _walk(net: pb.NetDef, prefix: str, root: str | None) -> Iterator[FileAccess]:
    table = file_ops()
    for i, op in enumerate(net.op):
        where = f"{prefix}op #{i} {op.type}" + (f" '{op.name}'" if op.name else "")
        for spec in table.get(op.type, ()):
            for value in spec.derive(op) if spec.derive is not None else _arg_values(op, spec.name):
                if not value:
                    continue
                path = caffe2_db_path(value, absolute=_absolute(op), root=root) if spec.db_path else value
                yield FileAccess(where, op.type, spec.name, spec.mode, path, str(resolve_path(path)))
        for arg_name, sub in nested_nets(op):
            yield from _walk(sub, f"{where} {arg_name} '{sub.name}': ", root)


def net_file_accesses(net: pb.NetDef, *, root: str | None = None, label: str = "") -> list[FileAccess]:
    """Every file the ops of ``net`` (and of its nested nets) name, in op order.

    Args:
        net: the net.
        root: the workspace root folder relative db paths are joined to (default ".").
        label: prefix of each ``where`` (e.g. "init net 'x': ").
    """
    return list(_walk(net, label, root))


def plan_file_accesses(plan: pb.PlanDef, *, root: str | None = None) -> list[FileAccess]:
    """Every file the nets of ``plan`` name (each net once, whichever steps run it)."""
    out: list[FileAccess] = []
    for net in plan.network:
        out.extend(_walk(net, f"plan net '{net.name}': ", root))
    return out


def check_accesses(accesses: Iterable[FileAccess], policy: IOPolicy, *, what: str = "the net") -> None:
    """Refuse, in one message, every access ``policy`` does not allow.

    Raises:
        FileAccessError: naming each refused op, its path and how to allow it.
    """
    refused = [a for a in accesses if not a.allowed(policy)]
    if not refused:
        return
    items = "; ".join(
        f"{a.where} would {a.mode} '{a.path}'" + (f" (resolves to {a.resolved})" if a.resolved != a.path else "")
        for a in refused
    )
    raise FileAccessError(
        f"refusing to run {what}: {len(refused)} file access(es) outside the allowed folders "
        f"({describe_policy(policy, short=True)}): {items}; {policy.hint}"
    )


def format_accesses(accesses: list[FileAccess], policy: IOPolicy | None = None) -> list[str]:
    """Report lines: one per access, ``mode  path  -> resolved  (where)``, refused ones marked."""
    if not accesses:
        return ["file access: none (no op reads or writes files)"]
    lines = [f"file access ({len(accesses)}):"]
    for a in accesses:
        shown = a.path if a.resolved == a.path else f"{a.path} -> {a.resolved}"
        mark = "" if policy is None or a.allowed(policy) else "   [REFUSED by the file access policy]"
        lines.append(f"  {a.mode:5s}  {shown}   ({a.where}, argument '{a.arg}'){mark}")
    return lines


def describe_policy(policy: IOPolicy, *, short: bool = False) -> str:
    """Where nets may read and write, in words."""

    def roots(r: tuple[os.PathLike[str], ...] | None) -> str:
        return "anywhere" if r is None else ", ".join(os.fspath(p) for p in r) or "nowhere"

    text = f"reads under {roots(policy.read_roots)}; writes under {roots(policy.write_roots)}"
    if policy.is_permissive:
        text = "any path (Caffe2's behaviour)"
    return text if short else f"file access policy: {text}"
