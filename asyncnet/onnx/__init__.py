"""ONNX import and export (needs the optional ``onnx`` package: ``pip install asyncnet[onnx]``).

* :func:`import_onnx`: an ONNX model -> (init NetDef, predict NetDef) with Caffe2 operators.
* :func:`export_onnx`: a predict NetDef (+ init NetDef) -> an ONNX ModelProto.
"""

from __future__ import annotations

from asyncnet.onnx.export import export_onnx
from asyncnet.onnx.importer import import_onnx, load_onnx

__all__ = ["export_onnx", "import_onnx", "load_onnx"]
