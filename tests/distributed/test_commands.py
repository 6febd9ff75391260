"""``asyncnet launch`` and ``asyncnet train-digits --workers``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from asyncnet.cli import main
from asyncnet.training import DigitsConfig, train_digits
from tests.distributed.conftest import require_torch

pytestmark = pytest.mark.usefixtures("no_thread_leak")


def _accuracy(text: str) -> float:
    m = re.search(r"test accuracy ([0-9.]+)", text)
    assert m, text
    return float(m.group(1))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_train_digits_two_workers_reach_one_process_accuracy(capfd: pytest.CaptureFixture[str]) -> None:
    require_torch()
    assert main(["train-digits", "--workers", "2", "--model", "mlp", "--epochs", "4"]) == 0
    out = capfd.readouterr().out
    assert "on 2 workers" in out, out
    single, _, _ = train_digits(DigitsConfig(model="mlp", epochs=4, progress=False))
    assert abs(_accuracy(out) - single.test_accuracy) <= 0.02, (out, single.test_accuracy)
    assert _accuracy(out) > 0.9


@pytest.mark.timeout(60)
def test_launch_runs_a_script_per_rank(tmp_path: Path) -> None:
    script = tmp_path / "w.py"
    script.write_text(
        "import os, sys\n"
        "open(sys.argv[1], 'w').write(os.environ['RANK'] + ' ' + os.environ['WORLD_SIZE'] + ' ' + "
        "os.environ['ASYNCNET_STORE'])\n"
    )
    assert main(["launch", "-n", "2", str(script), str(tmp_path / "out_{rank}.txt")]) == 0
    texts = [(tmp_path / f"out_{r}.txt").read_text().split() for r in range(2)]
    assert [t[:2] for t in texts] == [["0", "2"], ["1", "2"]]
    assert texts[0][2] == texts[1][2]


def test_launch_reports_a_failing_rank(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = tmp_path / "w.py"
    script.write_text("import os, sys\nsys.exit(3 if os.environ['RANK'] == '1' else 0)\n")
    assert main(["launch", "-n", "2", "--timeout-ms", "1000", str(script)]) == 1
    assert "rank 1 failed first" in capsys.readouterr().err


def test_launch_rejects_unknown_targets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["launch", "-n", "2", "no-such-command"]) == 1
    err = capsys.readouterr().err
    assert "neither a script nor an asyncnet command" in err and "run-plan" in err


def test_bucket_kb_maps_to_bucket_caps(capsys: pytest.CaptureFixture[str]) -> None:
    from asyncnet.distributed.buckets import DEFAULT_BUCKET_BYTES, DEFAULT_FIRST_BUCKET_BYTES
    from asyncnet.distributed.digits_command import bucket_caps

    assert bucket_caps(None) == (DEFAULT_BUCKET_BYTES, DEFAULT_FIRST_BUCKET_BYTES)
    assert bucket_caps(0)[0] == 0  # one Allreduce per gradient
    assert bucket_caps(16) == (DEFAULT_BUCKET_BYTES, 16 << 10)
    # Refused before any worker starts.
    assert main(["train-digits", "--workers", "2", "--bucket-kb", "-1"]) == 1
    assert "--bucket-kb must be >= 0, got -1" in capsys.readouterr().err
