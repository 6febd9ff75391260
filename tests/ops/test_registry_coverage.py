"""Every registered operator is documented, has shape inference, and is exercised by some test."""

from __future__ import annotations

import re

import pytest

from asyncnet.registry import default_registry
from tests.conftest import ROOT
from tests.ops.test_goldens import golden_op_types

TESTS = ROOT / "tests"


def _quoted_names_in_tests() -> set[str]:
    names: set[str] = set()
    pattern = re.compile(r"""["']([A-Za-z_][A-Za-z0-9_]*)["']""")
    for path in TESTS.rglob("*.py"):
        names.update(pattern.findall(path.read_text(encoding="utf-8", errors="replace")))
    return names


def test_every_op_has_a_doc() -> None:
    reg = default_registry()
    missing = [t for t in reg.types() if not reg.schema(t).doc.strip()]
    assert not missing, f"ops without a doc: {missing}"


def test_every_op_has_shape_inference() -> None:
    reg = default_registry()
    missing = [t for t in reg.types() if reg.schema(t).infer is None]
    assert not missing, f"ops without an infer function: {missing}"


def test_every_op_is_tested() -> None:
    """An op counts as tested when its type name appears quoted in a test file or a golden runs it."""
    reg = default_registry()
    try:
        goldens = set(golden_op_types().values())
    except OSError:  # pragma: no cover - corpus absent
        goldens = set()
    covered = _quoted_names_in_tests() | goldens
    missing = [t for t in reg.types() if t not in covered]
    assert not missing, f"ops that no test mentions: {missing}"


@pytest.mark.parametrize("op_type", ["Relu", "TopK", "SoftmaxWithLoss"])
def test_checker_sees_known_ops(op_type: str) -> None:
    assert op_type in _quoted_names_in_tests()
