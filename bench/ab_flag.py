"""A/B of one kernel switch on one bench net, in one process: the ratio B/A per round.

Kernel choices are module attributes (``asyncnet.ops._cblas:ENABLED``,
``asyncnet.ops._conv_fast:MAX_BIAS_GEMMS``, ``asyncnet.ops._flat:FlatDepthwise.SHIFTED``, ...). Some
are read when an op plans its work on the first run, some on every run, so:

* ``--when plan``: two copies of the net are built and first run with the attribute at A and at B,
  then timed alternately (the attribute is left at A while timing);
* ``--when run``: one net, the attribute set to A or B before each sample.

Samples alternate A/B (B first on odd rounds), each after asyncnet.benchmark's busy pause, and the
result is the median of per-round B/A ratios with its interquartile range -- the machine's speed
drifts by 2x within minutes, so only such interleaved ratios mean anything.

  PYTHONPATH=$PWD python bench/ab_flag.py resnet50 asyncnet.ops._cblas:ENABLED False True --when plan
  PYTHONPATH=$PWD python bench/ab_flag.py squeezenet asyncnet.ops._conv_fast:MAX_BIAS_GEMMS 0 8 --when run

NET is a bench_nets name; the net gets the default inference rewrites (``prepare=optimize``).
A and B are Python literals.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_nets as bn  # noqa: E402 - the bench directory is not a package

from asyncnet.benchmark import pause  # noqa: E402


def _target(spec: str) -> tuple[Any, str]:
    module, _, attr = spec.partition(":")
    if not attr:
        raise SystemExit(f"flag {spec!r}: expected module:attribute (module:Class.attribute)")
    try:
        owner: Any = importlib.import_module(module)
    except ImportError as e:
        raise SystemExit(f"flag {spec!r}: {e}") from None
    *path, name = attr.split(".")
    for part in path:
        if not hasattr(owner, part):
            raise SystemExit(f"flag {spec!r}: {owner!r} has no attribute {part!r}")
        owner = getattr(owner, part)
    if not hasattr(owner, name):
        raise SystemExit(f"flag {spec!r}: {owner!r} has no attribute {name!r}")
    return owner, name


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("net", choices=sorted(bn.ALL_NETS))
    p.add_argument("flag", help="module:attribute to switch")
    p.add_argument("a", help="value A (baseline), a Python literal")
    p.add_argument("b", help="value B, a Python literal")
    p.add_argument("--when", choices=["plan", "run"], default="plan", help="when the kernel reads the flag")
    p.add_argument("--executor", default="simple")
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--sample", type=float, default=0.4, help="seconds per sample (default 0.4)")
    args = p.parse_args()
    owner, name = _target(args.flag)
    a, b = ast.literal_eval(args.a), ast.literal_eval(args.b)
    case = bn.make_case(args.net)
    if isinstance(case, str):
        raise SystemExit(case)
    variant = bn.parse_variant(f"ab={args.executor},prepare=optimize")
    original = getattr(owner, name)
    runs: dict[str, Callable[[], Any]] = {}
    closers = []
    try:
        for label, value in (("A", a), ("B", b)) if args.when == "plan" else (("A", a),):
            setattr(owner, name, value)
            run, settle, _fetch, close = bn.build_contender(case, variant)
            closers.append(close)
            settle()
            runs[label] = run
        setattr(owner, name, a)

        def sample(label: str) -> float:
            if args.when == "run":
                setattr(owner, name, a if label == "A" else b)
            fn = runs.get(label, runs["A"])
            fn()  # the first run after a switch settles buffers and plans: not timed
            pause(0.15)
            t0, n = time.perf_counter(), 0
            while time.perf_counter() - t0 < args.sample:
                fn()
                n += 1
            return (time.perf_counter() - t0) / n

        ta: list[float] = []
        tb: list[float] = []
        for r in range(args.rounds):
            order = ("A", "B") if r % 2 == 0 else ("B", "A")
            for label in order:
                (ta if label == "A" else tb).append(sample(label))
    finally:
        setattr(owner, name, original)
        for close in closers:
            close()
    ra, rb = np.array(ta), np.array(tb)
    q1, med, q3 = np.percentile(rb / ra, [25, 50, 75])
    print(
        f"{case.label} ({args.executor}, flag read at {args.when}): A={a!r} {np.median(ra) * 1e3:.3f} ms, "
        f"B={b!r} {np.median(rb) * 1e3:.3f} ms; B/A {med:.3f} [{q1:.3f}-{q3:.3f}] over {args.rounds} rounds"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
