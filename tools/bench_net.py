"""Benchmark a Caffe2 net, like Caffe2's speed_benchmark (same as ``asyncnet bench``)."""

from __future__ import annotations

import sys

from asyncnet.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", *sys.argv[1:]]))
