"""Export a Caffe2 NetDef to ONNX (same as ``asyncnet to-onnx``)."""

from __future__ import annotations

import sys

from asyncnet.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["to-onnx", *sys.argv[1:]]))
