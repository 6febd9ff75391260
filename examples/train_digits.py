"""Train a small net on scikit-learn's 8x8 digits with asyncnet, save it and reload it.

    python examples/train_digits.py --model lenet --out /tmp/digits

Same as ``asyncnet train-digits``; the work is done by :mod:`asyncnet.training.digits`.
"""

from __future__ import annotations

import sys

from asyncnet.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-digits", *sys.argv[1:]]))
