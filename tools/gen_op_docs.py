"""Regenerate docs/operators.md from the operator registry.

Usage: python tools/gen_op_docs.py [--check]

With --check nothing is written; the exit status is 1 when docs/operators.md differs from what
generation would produce (the test suite runs this check).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "operators.md"


def main(argv: list[str]) -> int:
    from asyncnet.opdocs import operators_markdown
    from asyncnet.serde import atomic_write_bytes

    text = operators_markdown()
    if "--check" in argv:
        current = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
        if current != text:
            print(f"{DOC.relative_to(ROOT)} is stale: run python tools/gen_op_docs.py", file=sys.stderr)
            return 1
        return 0
    atomic_write_bytes(DOC, text.encode("utf-8"))
    print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
