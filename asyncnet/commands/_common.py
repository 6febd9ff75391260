"""Helpers shared by subcommands: loading inputs, writing outputs, summaries."""

from __future__ import annotations

import argparse
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from asyncnet.errors import AsyncNetError, NetDefinitionError, ParseError

if TYPE_CHECKING:
    from asyncnet.executors import ExecutorOptions
    from asyncnet.proto import caffe2_pb2 as pb
    from asyncnet.workspace import Workspace


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Arrays of an .npz file; never unpickles (object arrays are refused)."""
    p = Path(path)
    if not p.exists():
        raise ParseError(f"{p}: no such file", source=str(p))
    if not zipfile.is_zipfile(p):
        raise ParseError(f"{p}: not an .npz archive (expected a zip of .npy arrays)", source=str(p))
    try:
        _check_npz_members(p)
        with np.load(p, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except AsyncNetError:
        raise
    except Exception as e:
        # numpy/zipfile/zlib raise a wide, version-dependent set of types on damaged archives.
        raise ParseError(
            f"{p}: not a readable .npz file (object arrays are refused): {type(e).__name__}: {e}", source=str(p)
        ) from e


def _check_npz_members(p: Path) -> None:
    """Refuse members whose .npy header claims more data than the member holds, before reading it."""
    from asyncnet.serde import checked_numel

    with zipfile.ZipFile(p) as zf:
        for info in zf.infolist():
            with zf.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                if dtype.hasobject:
                    raise ParseError(
                        f"{p}: member '{info.filename}' holds Python objects (object arrays are refused)", source=str(p)
                    )
                need = checked_numel(shape, f"{p} member '{info.filename}'") * dtype.itemsize
                if need > info.file_size:
                    raise ParseError(
                        f"{p}: member '{info.filename}' claims {need} bytes of data, holds {info.file_size}",
                        source=str(p),
                    )


def save_npz(path: str | Path, arrays: Mapping[str, Any]) -> None:
    """Write arrays to .npz (keys may contain '/')."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "wb") as f:
        np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})  # type: ignore[arg-type]


def describe_array(name: str, value: Any) -> str:
    """One summary line: name, shape, dtype, min/max/mean for numeric arrays."""
    if not isinstance(value, np.ndarray):
        return f"  {name}: {type(value).__name__}"
    text = f"  {name}: shape {tuple(value.shape)} {value.dtype}"
    if value.size and value.dtype.kind in "biuf":
        v = value.astype(np.float64)
        text += f"  min {v.min():.6g} max {v.max():.6g} mean {v.mean():.6g}"
    return text


def parse_shape_specs(specs: Iterable[str]) -> dict[str, tuple[int, ...]]:
    """``NAME=D0,D1,...`` strings to name -> shape."""
    out: dict[str, tuple[int, ...]] = {}
    for spec in specs:
        name, sep, dims = spec.rpartition("=")
        if not sep or not name:
            raise argparse.ArgumentTypeError(f"--input-shape expects NAME=D0,D1,..., got '{spec}'")
        try:
            out[name] = tuple(int(d) for d in dims.split(",") if d.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"--input-shape '{spec}': dims must be integers") from None
    return out


@dataclass
class NetSetup:
    """A net to run and what to feed it, read and checked from ``run``/``bench`` options.

    Attributes:
        net_def: the net to run.
        init_def: the net run once before it (parameters), or None.
        feeds: arrays from ``--inputs``, keyed by input name.
        data_shapes: ``--input-shape`` shapes, keyed by input name.
    """

    net_def: pb.NetDef
    init_def: pb.NetDef | None
    feeds: dict[str, np.ndarray]
    data_shapes: dict[str, tuple[int, ...]]

    @property
    def data_inputs(self) -> list[str]:
        """Names the user supplied as data (``--inputs`` keys and ``--input-shape`` names)."""
        return list(dict.fromkeys([*self.feeds, *self.data_shapes]))

    def fill(self, workspace: Workspace, *, random_init: bool, seed: int, options: ExecutorOptions) -> None:
        """Run the init net, feed ``feeds`` and generate ``--input-shape`` data (and, with ``random_init``,
        every other missing input) into ``workspace``."""
        from asyncnet.randinit import fill_workspace

        if self.init_def is not None:
            workspace.run_net_once(self.init_def, options=options)
        for name, value in self.feeds.items():
            workspace.feed(name, value)
        if self.data_shapes or random_init:
            fill_workspace(self.net_def, workspace, self.data_shapes, params=random_init, seed=seed)


def add_input_arguments(p: argparse.ArgumentParser) -> None:
    """The options that say what a net runs on (shared by `run` and `bench`)."""
    p.add_argument("--init", metavar="INIT_NET", help="net run once before NET (parameters)")
    p.add_argument("--inputs", metavar="IN.npz", help="arrays to feed, keyed by blob name")
    p.add_argument(
        "--input-shape",
        action="append",
        default=[],
        metavar="NAME=D0,D1,...",
        help="feed seeded random float32 data of this shape to input NAME (repeatable)",
    )
    p.add_argument(
        "--random-init",
        action="store_true",
        help="fill every other unfed input (parameters) with seeded random values shaped by shape inference",
    )
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed for --input-shape/--random-init (default 0)")


def read_net_setup(
    net_path: str, init_path: str | None, inputs_path: str | None, shape_specs: Iterable[str]
) -> NetSetup:
    """Read the nets and inputs named on the command line and check that every fed name is a net input.

    Raises:
        ParseError: a file is unreadable.
        NetDefinitionError: a bad ``--input-shape`` spec, or a fed / shaped name the net does not read.
    """
    from asyncnet.net import net_inputs
    from asyncnet.serde import read_net

    net_def = read_net(net_path)
    init_def = read_net(init_path) if init_path else None
    feeds = load_npz(inputs_path) if inputs_path else {}
    try:
        data_shapes = parse_shape_specs(shape_specs)
    except argparse.ArgumentTypeError as e:
        raise NetDefinitionError(str(e)) from None
    accepted = set(net_inputs(net_def))
    listing = ", ".join(sorted(accepted)) or "none"
    bad_shapes = sorted(k for k in data_shapes if k not in accepted)
    if bad_shapes:
        raise NetDefinitionError(
            f"--input-shape names {bad_shapes}, which are not inputs of net '{net_def.name}' "
            f"from {net_path}; its inputs: {listing}"
        )
    unknown = sorted(k for k in feeds if k not in accepted)
    if unknown:
        raise NetDefinitionError(
            f"{inputs_path}: key(s) {unknown} are not inputs of net '{net_def.name}' from {net_path}; its inputs: {listing}"
        )
    return NetSetup(net_def, init_def, feeds, data_shapes)
