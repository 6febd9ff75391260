"""The asyncnet.training package: lazy re-exports that keep `import asyncnet.training` light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import asyncnet.training as training


def test_every_exported_name_resolves_to_its_module_object() -> None:
    from asyncnet.distributed import data_parallel
    from asyncnet.training import digits, gradients, optimizers

    modules = {
        "training.digits": digits,
        "training.gradients": gradients,
        "training.optimizers": optimizers,
        "distributed.data_parallel": data_parallel,
    }
    assert sorted(training.__all__) == sorted(training._WHERE)
    for name in training.__all__:
        assert getattr(training, name) is getattr(modules[training._WHERE[name]], name)
    assert set(training.__all__) <= set(dir(training))


def test_unknown_name_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = training.no_such_name  # type: ignore[attr-defined]


@pytest.mark.timeout(60)
def test_import_does_not_load_the_digits_example_or_torch() -> None:
    code = (
        "import sys, asyncnet.training, asyncnet.training.gradients\n"
        "print(sorted(m for m in ('asyncnet.training.digits', 'torch', 'sklearn') "
        "if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout
