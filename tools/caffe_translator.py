"""Translate a Caffe model to Caffe2: same as ``asyncnet from-caffe`` (see ``--help``)."""

from __future__ import annotations

import sys

from asyncnet.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["from-caffe", *sys.argv[1:]]))
