"""``asyncnet make-db DATA.npz OUT``: write a dataset as a database of TensorProtos records.

Record i holds tensor i of every chosen array (e.g. an image and its label), keyed by its
zero-padded index, as Caffe2's DB-creation scripts wrote them; ``CreateDB`` +
``TensorProtosDBInput`` read it back, sharded across ranks.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import Any

from asyncnet.commands._common import load_npz
from asyncnet.db.records import RECORD_DB_TYPES, encode_example, write_examples
from asyncnet.errors import ArgumentError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("make-db", help="write arrays of an .npz as a minidb/LMDB of TensorProtos records")
    p.add_argument("npz", help="input arrays; all chosen arrays share their first dimension (the examples)")
    p.add_argument("out", help="database to write (a minidb file, or an LMDB directory)")
    p.add_argument("--db-type", choices=RECORD_DB_TYPES, default="minidb", help="default: %(default)s")
    p.add_argument("--fields", nargs="+", metavar="NAME", help="arrays to store, in record order (default: all)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with the train extra
        return None
    return tqdm(total=total, unit="rec", desc="make-db", leave=False, dynamic_ncols=True)


def run(args: argparse.Namespace) -> int:
    arrays = load_npz(args.npz)
    fields = args.fields or list(arrays)
    missing = [f for f in fields if f not in arrays]
    if missing:
        raise ArgumentError(f"{args.npz}: no arrays {missing}; it has {sorted(arrays)}")
    counts = {f: arrays[f].shape[0] if arrays[f].ndim else 0 for f in fields}
    n = counts[fields[0]]
    if any(c != n for c in counts.values()) or n == 0:
        raise ArgumentError(f"{args.npz}: arrays {fields} must share a non-zero first dimension, got {counts}")
    width = len(str(n - 1))
    bar = _progress(n, not args.no_progress)

    def records() -> Iterator[tuple[str, bytes]]:
        for i in range(n):
            yield f"{i:0{width}d}", encode_example(arrays[f][i] for f in fields)
            if bar is not None:
                bar.update(1)

    try:
        written = write_examples(args.out, args.db_type, records())
    finally:
        if bar is not None:
            bar.close()
    sys.stdout.write(f"wrote {written} records ({', '.join(fields)}) to {args.db_type} {args.out}\n")
    return 0
