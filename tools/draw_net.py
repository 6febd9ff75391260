"""Draw a net: same as ``asyncnet draw`` (see ``--help``)."""

from __future__ import annotations

import sys

from asyncnet.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["draw", *sys.argv[1:]]))
