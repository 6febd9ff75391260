"""A served model's files (the model-zoo layout) and the specs of its inputs.

A model directory holds ``init_net.pb`` and ``predict_net.pb`` (``.pbtxt`` accepted too) and
optionally ``value_info.json`` — ``{"input": [data_type, [d0, d1, ...]]}`` (a Caffe2
``TensorProto.DataType``; 1 is FLOAT), as the Caffe2 model zoo shipped it. The directory's name
is the model's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from asyncnet.errors import NetDefinitionError, ParseError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import caffe2_data_type, read_net


@dataclass(frozen=True)
class TensorSpec:
    """What a model accepts (or returns) under one name.

    Attributes:
        name: the blob name.
        dtype: the required dtype, or None when the model does not say.
        shape: the required shape (None entries are free dimensions), or None when unknown.
    """

    name: str
    dtype: np.dtype[Any] | None = None
    shape: tuple[int | None, ...] | None = None

    def describe(self) -> str:
        """``name float32 [N, 3, 227, 227]`` (``?`` for what is unknown)."""
        dtype = str(self.dtype) if self.dtype is not None else "any dtype"
        if self.shape is None:
            return f"{self.name} ({dtype}, any shape)"
        dims = ", ".join("N" if d is None else str(d) for d in self.shape)
        return f"{self.name} ({dtype} [{dims}])"

    def matches_shape(self, shape: tuple[int, ...]) -> bool:
        if self.shape is None:
            return True
        return len(shape) == len(self.shape) and all(w is None or w == d for w, d in zip(self.shape, shape))

    def to_proto_fields(self) -> tuple[int, list[int], bool]:
        """(Caffe2 data type or UNDEFINED, dims with -1 for free ones, has_shape) for ModelInfo."""
        data_type = caffe2_data_type(self.dtype) if self.dtype is not None else int(pb.TensorProto.UNDEFINED)
        dims = [-1 if d is None else d for d in self.shape] if self.shape is not None else []
        return data_type, dims, self.shape is not None


def _find(folder: Path, stem: str, *, required: bool) -> Path | None:
    for suffix in (".pb", ".pbtxt"):
        p = folder / f"{stem}{suffix}"
        if p.is_file():
            return p
    if required:
        have = ", ".join(sorted(p.name for p in folder.iterdir())) if folder.is_dir() else "not a folder"
        raise ParseError(f"model folder {folder}: no {stem}.pb or {stem}.pbtxt (it holds: {have or 'nothing'})")
    return None


@dataclass
class ModelFiles:
    """The nets and input specs read from a model directory."""

    name: str
    folder: Path
    init_net: pb.NetDef | None
    predict_net: pb.NetDef
    value_info: dict[str, TensorSpec] | None

    @classmethod
    def read(cls, folder: str | Path, name: str | None = None) -> ModelFiles:
        """Read ``folder`` (zoo layout). Raises ParseError for missing or unreadable files."""
        path = Path(folder)
        if not path.is_dir():
            raise ParseError(f"model folder {path}: no such folder", source=str(path))
        predict = read_net(_find(path, "predict_net", required=True))  # type: ignore[arg-type]
        init_path = _find(path, "init_net", required=False)
        init = read_net(init_path) if init_path is not None else None
        vi_path = path / "value_info.json"
        value_info = read_value_info(vi_path) if vi_path.is_file() else None
        return cls(name or path.resolve().name, path, init, predict, value_info)


def read_value_info(path: str | Path) -> dict[str, TensorSpec]:
    """Specs from a model-zoo ``value_info.json`` (``{"name": [data_type, [dims...]]}``, Caffe2 data
    types, read by :func:`asyncnet.shapes.read_value_info` as everywhere in asyncnet)."""
    from asyncnet.shapes import read_value_info as read_infos

    return {
        name: TensorSpec(name, info.dtype, None if info.shape is None else tuple(info.shape))
        for name, info in read_infos(path).items()
    }


def check_value_info(value_info: dict[str, TensorSpec], accepted: list[str], net_name: str) -> None:
    """Every value_info name must be an input of the predict net."""
    unknown = sorted(set(value_info) - set(accepted))
    if unknown:
        raise NetDefinitionError(
            f"value_info names {unknown}, which are not inputs of net '{net_name}'; its inputs: "
            f"{', '.join(accepted) or 'none'}"
        )
