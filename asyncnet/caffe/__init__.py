"""Translate BVLC Caffe nets (prototxt + optional caffemodel) into Caffe2 NetDefs.

``translate_files(prototxt, caffemodel)`` is the one-call entry point; the pieces are
``reader`` (parsing, V1 upgrade, line numbers), ``shapes`` (Caffe's own shape rules),
``layers`` (one translator per layer type), ``weights`` (blobs and the init net) and
``translate`` (the driver).
"""

from __future__ import annotations

from asyncnet.caffe.reader import read_caffemodel, read_prototxt
from asyncnet.caffe.translate import Translation, translate, translate_files

__all__ = ["Translation", "read_caffemodel", "read_prototxt", "translate", "translate_files"]
