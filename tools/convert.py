"""Convert Caffe2 protobuf files: same as ``asyncnet convert`` (see ``--help``)."""

from __future__ import annotations

import sys

from asyncnet.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["convert", *sys.argv[1:]]))
