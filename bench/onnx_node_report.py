"""Run onnx's own backend node tests through asyncnet's ONNX importer; print pass counts per op.

Usage: python bench/onnx_node_report.py [--verbose]

A case counts as *passed* when every output matches onnx's expected output (onnx's per-case
rtol/atol); *refused* when the importer raises UnsupportedError (a documented limit, with a message
naming the node); *failed* otherwise. Only cases whose every node has a mapping are run.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.tools.onnx_node_cases import mapped_cases, run_case  # noqa: E402


def main(argv: list[str]) -> int:
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"passed": 0, "refused": 0, "failed": 0})
    failures = []
    for case in mapped_cases():
        outcome, detail = run_case(case)
        op = (
            case.model.graph.node[0].op_type
            if len(case.model.graph.node) == 1
            else "+".join(sorted({n.op_type for n in case.model.graph.node}))
        )
        counts[op][outcome] += 1
        if outcome != "passed":
            failures.append((case.name, outcome, detail))
    width = max(len(k) for k in counts)
    tot = {"passed": 0, "refused": 0, "failed": 0}
    for op in sorted(counts):
        c = counts[op]
        for k in tot:
            tot[k] += c[k]
        print(f"{op:{width}s}  passed {c['passed']:3d}  refused {c['refused']:3d}  failed {c['failed']:3d}")
    print(f"{'TOTAL':{width}s}  passed {tot['passed']:3d}  refused {tot['refused']:3d}  failed {tot['failed']:3d}")
    if "--verbose" in argv:
        for name, outcome, detail in failures:
            print(f"{outcome:8s} {name}: {detail}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
