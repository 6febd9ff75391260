"""Helpers shared by subcommands: loading inputs, writing outputs, summaries."""

from __future__ import annotations

import argparse
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from asyncnet.errors import AsyncNetError, ParseError

# Error types numpy/zipfile raise on unreadable .npz files.
_NPZ_ERRORS = (ValueError, OSError, zipfile.BadZipFile, EOFError, KeyError)


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Arrays of an .npz file; never unpickles (object arrays are refused)."""
    p = Path(path)
    if not p.exists():
        raise ParseError(f"{p}: no such file", source=str(p))
    try:
        with np.load(p, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise ParseError(f"{p}: expected an .npz archive of named arrays, found a single array", source=str(p))
            return {k: data[k] for k in data.files}
    except AsyncNetError:
        raise
    except _NPZ_ERRORS as e:
        raise ParseError(f"{p}: not a readable .npz file (object arrays are refused): {e}", source=str(p)) from e


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
