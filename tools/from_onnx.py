"""Import an ONNX model as Caffe2 NetDefs (same as ``asyncnet from-onnx``)."""

from __future__ import annotations

import sys

from asyncnet.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["from-onnx", *sys.argv[1:]]))
