#!/usr/bin/env python
"""Run Caffe2's own Python operator tests, unmodified, through asyncnet.compat, and report.

Caffe2's tests (caffe2/python/operator_test/*.py from the torch 1.12.1 wheel, the last one that
shipped the caffe2 Python package) are BSD-licensed upstream code: they are fetched into a cache
outside the repository and never copied into it.

    python tools/caffe2_suite.py --fetch                      # download + extract, then run all
    python tools/caffe2_suite.py --upstream DIR --files adagrad_test.py relu_op_test.py
    python tools/caffe2_suite.py --from-results R.jsonl --report out.md   # re-report only

pytest runs in subprocesses (a chunk of files each) with tools/caffe2_suite_plugin.py, which
serves caffe2.python.core / workspace / brew / ... from asyncnet.compat and records each test's
outcome. Hypothesis uses the profile Caffe2's hypothesis_test_util loads: CAFFE2_HYPOTHESIS_PROFILE
(upstream's default "dev": max_examples=10, deadline 10 s; "debug": 1000; "sandcastle": 50).

Metric: passed / (collected + uncollected - accelerator_skipped), where
* collected: test items pytest collected;
* uncollected: for each test file that failed to import, its number of ``def test_`` functions
  (counted as errors);
* accelerator_skipped: tests upstream itself skips on a CPU-only build (skip reason names a GPU,
  CUDA, HIP/ROCm, cuDNN, NCCL, MKL-DNN or IDEEP);
* passed: every phase (setup, call, teardown) passed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TOOLS = Path(__file__).resolve().parent
TORCH_VERSION = "1.12.1"
WHEEL_PLATFORM = "macosx_10_9_x86_64"
DEFAULT_CACHE = Path.home() / ".cache" / "asyncnet" / f"caffe2-{TORCH_VERSION}"
OPERATOR_TESTS = "caffe2/python/operator_test"
# Seconds past the per-test timeout after which a stuck test process is ended (--hang-grace).
HANG_GRACE = 30

ACCELERATOR_SKIP = re.compile(r"gpu|cuda|\bhip\b|rocm|cudnn|nccl|mkldnn|ideep", re.IGNORECASE)
TEST_DEF = re.compile(r"^\s*def (test_\w+)\s*\(", re.MULTILINE)


# ---------------------------------------------------------------- fetching


def fetch(cache: Path) -> Path:
    """Download the torch 1.12.1 macOS wheel (pip) into ``cache`` and extract its caffe2 package.

    Extracts every ``caffe2/**/*.py`` and the serialized-test goldens (``*.zip`` under
    caffe2/python/serialized_test/data). Returns the extracted tree's root (holding ``caffe2/``).
    """
    dl = cache / "dl"
    upstream = cache / "upstream"
    wheels = sorted(dl.glob(f"torch-{TORCH_VERSION}-*.whl")) if dl.is_dir() else []
    if not wheels:
        dl.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--platform",
            WHEEL_PLATFORM,
            "--python-version",
            "39",
            f"torch=={TORCH_VERSION}",
            "-d",
            str(dl),
        ]
        subprocess.run(cmd, check=True)
        wheels = sorted(dl.glob(f"torch-{TORCH_VERSION}-*.whl"))
        if not wheels:
            raise SystemExit(f"pip download left no torch-{TORCH_VERSION} wheel in {dl}")
    with zipfile.ZipFile(wheels[0]) as z:
        for name in z.namelist():
            golden = name.startswith("caffe2/python/serialized_test/data/") and name.endswith(".zip")
            if (name.startswith("caffe2/") and name.endswith(".py")) or golden:
                z.extract(name, upstream)
    return upstream


# ---------------------------------------------------------------- running


def test_files(upstream: Path, selected: list[str] | None) -> list[Path]:
    """The operator test files (``*_test.py``), optionally only those named in ``selected``
    (file names, with or without ``.py``, or glob patterns)."""
    folder = upstream / OPERATOR_TESTS
    files = sorted(p for p in folder.glob("*.py") if p.name.endswith("_test.py"))
    if not selected:
        return files
    keep: list[Path] = []
    for pattern in selected:
        pat = pattern if pattern.endswith(".py") or "*" in pattern else pattern + ".py"
        keep.extend(p for p in files if p.match(pat) and p not in keep)
    return keep


def run_chunk(files: list[Any], upstream: Path, results: Path, timeout: int, chunk_timeout: int, profile: str) -> int:
    """Run pytest on ``files`` (paths or node ids) in a subprocess; returns its exit status (-9 when
    killed). A test that outlives its timeout by HANG_GRACE s (its thread stuck where pytest-timeout's
    signal cannot reach) is recorded as a timeout and the subprocess exits (see run_files)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(TOOLS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["CAFFE2_SUITE_UPSTREAM"] = str(upstream)
    env["CAFFE2_SUITE_RESULTS"] = str(results)
    env["CAFFE2_HYPOTHESIS_PROFILE"] = profile
    env["CAFFE2_SUITE_HARD_TIMEOUT"] = str(timeout + HANG_GRACE)
    env.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory(prefix="caffe2_suite.") as tmp:
        ini = Path(tmp) / "pytest.ini"
        ini.write_text("[pytest]\n", encoding="utf-8")
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-c",
            str(ini),
            "--rootdir",
            str(upstream),
            "-p",
            "caffe2_suite_plugin",
            "-p",
            "no:cacheprovider",
            f"--timeout={timeout}",
            "-q",
            "--no-header",
            "-rN",
            "--continue-on-collection-errors",
            *[str(f) for f in files],
        ]
        log = results.with_suffix(".log")
        with open(log, "ab") as out:
            try:
                proc = subprocess.run(cmd, env=env, cwd=tmp, timeout=chunk_timeout, stdout=out, stderr=out)
            except subprocess.TimeoutExpired:
                return -9
    return proc.returncode


def run_files(files: list[Path], upstream: Path, results: Path, timeout: int, chunk_timeout: int, profile: str) -> int:
    """run_chunk, then again on the collected tests of ``files`` that got no result (the subprocess
    ended early: a hung test, a crash), until none is left or no progress is made."""
    rc = run_chunk(files, upstream, results, timeout, chunk_timeout, profile)
    names = {f.name for f in files}
    for _ in range(20):
        done, collected = set(), []
        for rec in read_records(results):
            if _file_of(rec["nodeid"]) not in names:
                continue
            if rec["when"] == "collected":
                collected.append(rec["nodeid"])
            elif rec["when"] in ("call", "setup", "teardown"):
                done.add(rec["nodeid"])
        left = [n for n in dict.fromkeys(collected) if n not in done]
        if rc == 0 or not left:
            break
        # Resume after the test that ended the run: node ids relative to the upstream root.
        before = len(done)
        rc = run_chunk([str(upstream / n) for n in left], upstream, results, timeout, chunk_timeout, profile)
        after = {r["nodeid"] for r in read_records(results) if r["when"] in ("call", "setup", "teardown")}
        if len(after & set(left)) == 0 and len(done) == before:
            break
    return rc


# ---------------------------------------------------------------- classifying


_MISSING_OP = [
    re.compile(r"unknown operator type '([\w.]+)'"),
    re.compile(r"Method (\w+) is not a registered operator"),
    re.compile(r"operator '(\w+)' has no kernel"),
]
_MISSING_GRAD = re.compile(r"no gradient is registered for operator type '(\w+)'")
_NO_ATTR_MODULE = re.compile(r"module '([\w.]+)' has no attribute '(\w+)'")
_NO_ATTR_OBJECT = re.compile(r"'(\w+)' object has no attribute '(\w+)'")
_CANNOT_IMPORT = re.compile(r"cannot import name '(\w+)' from '([\w.]+)'")
_NO_MODULE = re.compile(r"No module named '([\w.]+)'")
_BAD_KWARG = re.compile(r"(\w+)\(\) got an unexpected keyword argument '(\w+)'")
# Upstream test code that needs the 2022 library versions it was written for (numpy < 1.25,
# scipy < 1.14, hypothesis 5/6.0x, Python < 3.11), failing outside asyncnet.
_ENVIRONMENT = [
    ("numpy 2: array-to-scalar assignment", "setting an array element with a sequence"),
    ("numpy 2: array-to-scalar conversion", "only 0-dimensional arrays can be converted"),
    ("numpy 2: array-to-scalar conversion", "only length-1 arrays can be converted"),
    ("numpy 2: removed alias", "was removed in the NumPy"),
    ("numpy 2: np.sum(generator)", "Calling np.sum(generator)"),
    ("numpy 2: Python int out of bounds for the dtype (NEP 50)", "out of bounds for int"),
    ("scipy: interp2d removed", "has been removed in SciPy"),
    ("python 3.11: inspect.getargspec removed", "has no attribute 'getargspec'"),
    ("hypothesis: arrays() signature", "arrays() takes"),
    ("hypothesis: @settings without @given", "without `@given` is completely pointless"),
    ("hypothesis: test run from several executors", "called from multiple different executors"),
]


def _short_module(name: str) -> str:
    return name.replace("asyncnet.compat.", "").replace("caffe2.python.", "")


def _normalize(message: str) -> str:
    first = message.strip().splitlines()[0] if message.strip() else ""
    first = re.sub(r"\d+(\.\d+)?", "#", first)
    return first[:110]


def _not_shipped(module: str, shipped: frozenset[str] | None) -> bool:
    """Whether a caffe2 module is missing from the wheel itself (so no Caffe2 install had it)."""
    return shipped is not None and module.startswith("caffe2.") and module not in shipped


def classify(rec: dict[str, Any], shipped: frozenset[str] | None = None) -> tuple[str, str]:
    """(category, key) of one failed phase record.

    Categories: missing-op, missing-grad, compat-api, timeout, wrong-result, asyncnet-error,
    environment (upstream code that needs the older numpy / scipy / hypothesis / Python it was
    written for, a module not installed, or a caffe2 module the wheel itself lacks), collection,
    crashed, other. ``shipped``: the wheel's caffe2 module names (packages included).
    """
    msg = rec.get("message", "") or ""
    exc = rec.get("exc_type", "") or ""
    frame = rec.get("asyncnet_frame", "") or ""
    if rec.get("when") == "collect":
        m = _MISSING_OP[0].search(msg) or _MISSING_OP[1].search(msg)
        if m:
            return "missing-op", m.group(1)
        m2 = _CANNOT_IMPORT.search(msg)
        if m2:
            if _not_shipped(f"{m2.group(2)}.{m2.group(1)}", shipped):
                return "environment", f"not in the wheel: {m2.group(2)}.{m2.group(1)}"
            return "compat-api", f"{_short_module(m2.group(2))}.{m2.group(1)}"
        m3 = _NO_ATTR_MODULE.search(msg)
        if m3:
            return "compat-api", f"{_short_module(m3.group(1))}.{m3.group(2)}"
        m4 = _NO_MODULE.search(msg)
        if m4:
            return "environment", f"module {m4.group(1)}"
        return "collection", _normalize(msg.strip().splitlines()[-1] if msg.strip() else "")
    if rec.get("outcome") == "crashed":
        return "crashed", "chunk killed or test did not finish"
    if ("Timeout" in msg and exc == "Failed") or exc in {"DeadlineExceeded", "Timeout"}:
        kind = {"Failed": "per-test timeout", "Timeout": "hung (test process ended)"}
        return "timeout", kind.get(exc, "hypothesis deadline")
    for pat in _MISSING_OP:
        m = pat.search(msg)
        if m:
            return "missing-op", m.group(1)
    if not frame:
        for label, needle in _ENVIRONMENT:
            if needle in msg:
                return "environment", label
    m = _MISSING_GRAD.search(msg)
    if m:
        return "missing-grad", m.group(1)
    if exc == "AttributeError":
        m = _NO_ATTR_MODULE.search(msg)
        if m and m.group(1).startswith(("asyncnet", "caffe2")):
            return "compat-api", f"{_short_module(m.group(1))}.{m.group(2)}"
        m = _NO_ATTR_OBJECT.search(msg)
        if m and (frame.startswith("compat/") or not frame):
            return "compat-api", f"{m.group(1)}.{m.group(2)}"
    if exc in {"ImportError", "ModuleNotFoundError"}:
        m = _CANNOT_IMPORT.search(msg)
        if m:
            if _not_shipped(f"{m.group(2)}.{m.group(1)}", shipped):
                return "environment", f"not in the wheel: {m.group(2)}.{m.group(1)}"
            return "compat-api", f"{_short_module(m.group(2))}.{m.group(1)}"
        m = _NO_MODULE.search(msg)
        if m:
            if _not_shipped(m.group(1), shipped):
                return "environment", f"not in the wheel: {m.group(1)}"
            return ("compat-api" if m.group(1).startswith("caffe2") else "environment"), f"module {m.group(1)}"
    if exc == "TypeError" and frame.startswith("compat/"):
        m = _BAD_KWARG.search(msg)
        if m:
            return "compat-api", f"{m.group(1)}({m.group(2)}=)"
        return "compat-api", f"{frame}: {_normalize(msg)}"
    if exc == "AssertionError" and not frame:
        return "wrong-result", rec["nodeid"].split("::")[0].rsplit("/", 1)[-1]
    if rec.get("exc_module", "").startswith("asyncnet") or frame:
        return "asyncnet-error", f"{exc} @ {frame}: {_normalize(msg)}"
    return "other", f"{exc} @ {rec.get('frame', '')}: {_normalize(msg)}"


# ---------------------------------------------------------------- reporting


def _file_of(nodeid: str) -> str:
    return nodeid.split("::")[0].rsplit("/", 1)[-1]


def shipped_modules(upstream: Path | None) -> frozenset[str] | None:
    """Dotted names of every caffe2 module and package in the extracted tree."""
    if upstream is None or not (upstream / "caffe2").is_dir():
        return None
    names = set()
    for p in (upstream / "caffe2").rglob("*.py"):
        parts = list(p.relative_to(upstream).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.add(".".join(parts))
    return frozenset(names)


def summarize(
    records: list[dict[str, Any]], files: list[Path], shipped: frozenset[str] | None = None
) -> dict[str, Any]:
    """Per-test outcomes, per-file counts, failure classes and the metric from the plugin's records."""
    collected: list[str] = []
    phases: dict[str, list[dict[str, Any]]] = defaultdict(list)
    collect_errors: dict[str, dict[str, Any]] = {}
    for rec in records:
        if rec["when"] == "collected":
            if rec["nodeid"] not in phases:
                collected.append(rec["nodeid"])
                phases[rec["nodeid"]] = []
        elif rec["when"] == "collect":
            if rec["nodeid"].endswith(".py"):
                collect_errors[_file_of(rec["nodeid"])] = rec
        else:
            phases[rec["nodeid"]].append(rec)
    static_counts = {p.name: len(TEST_DEF.findall(p.read_text(encoding="utf-8"))) for p in files if p.is_file()}

    tests: dict[str, dict[str, Any]] = {}
    for nodeid in collected:
        recs = phases[nodeid]
        failed = [r for r in recs if r["outcome"] == "failed"]
        skipped = [r for r in recs if r["outcome"] == "skipped"]
        if failed:
            first = failed[0]
            status = "failed" if first["when"] == "call" else "error"
            cat, key = classify(first, shipped)
            tests[nodeid] = {"status": status, "category": cat, "key": key, "message": first.get("message", "")[:300]}
        elif skipped:
            reason = skipped[0].get("reason", "")
            status = "skipped-accelerator" if ACCELERATOR_SKIP.search(reason) else "skipped"
            tests[nodeid] = {"status": status, "reason": reason}
        elif any(r["when"] == "call" and r["outcome"] == "passed" for r in recs):
            tests[nodeid] = {"status": "passed"}
        else:
            tests[nodeid] = {"status": "error", "category": "crashed", "key": "chunk killed or test did not finish"}

    per_file: dict[str, Counter[str]] = defaultdict(Counter)
    for nodeid, t in tests.items():
        per_file[_file_of(nodeid)][t["status"]] += 1
    uncollected = 0
    classes: Counter[tuple[str, str]] = Counter()
    for t in tests.values():
        if t["status"] in {"failed", "error"}:
            classes[(t["category"], t["key"])] += 1
    for fname, rec in collect_errors.items():
        n = max(static_counts.get(fname, 1), 1)
        uncollected += n
        per_file[fname]["uncollected"] += n
        cat, key = classify(rec, shipped)
        classes[(cat, key)] += n

    status_counts = Counter(t["status"] for t in tests.values())
    denominator = len(collected) + uncollected - status_counts["skipped-accelerator"]
    passed = status_counts["passed"]
    return {
        "collected": len(collected),
        "uncollected": uncollected,
        "passed": passed,
        "failed": status_counts["failed"],
        "errors": status_counts["error"],
        "skipped_accelerator": status_counts["skipped-accelerator"],
        "skipped_other": status_counts["skipped"],
        "denominator": denominator,
        "metric": round(passed / denominator, 4) if denominator else 0.0,
        "files_run": len(files),
        "per_file": {f: dict(c) for f, c in sorted(per_file.items())},
        "classes": [{"category": c, "key": k, "tests": n} for (c, k), n in classes.most_common()],
        "tests": tests,
        "collect_errors": {f: r.get("message", "")[-600:] for f, r in collect_errors.items()},
    }


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    s = summary
    lines = [
        "# Caffe2 operator tests through asyncnet.compat",
        "",
        f"- command: `{meta.get('command', '')}`",
        f"- when: {meta.get('when', '')} (wall {meta.get('wall_s', 0):.0f} s); hypothesis profile "
        f"`{meta.get('profile', '')}`; per-test timeout {meta.get('timeout', '')} s",
        f"- files: {s['files_run']}; collected {s['collected']}; uncollected (import errors, counted as "
        f"their `def test_` count) {s['uncollected']}",
        f"- passed {s['passed']}, failed {s['failed']}, errors {s['errors']}, skipped on CPU-only builds "
        f"{s['skipped_accelerator']}, other skips {s['skipped_other']}",
        f"- **metric: {s['passed']} / {s['denominator']} = {100 * s['metric']:.1f}%** "
        "(passed / (collected + uncollected - accelerator-only skips))",
        "",
        "## Failure classes (sorted by tests each would fix)",
        "",
        "| tests | category | key |",
        "|---:|---|---|",
    ]
    for c in s["classes"]:
        key = c["key"].replace("|", "\\|")
        lines.append(f"| {c['tests']} | {c['category']} | {key} |")
    by_cat: Counter[str] = Counter()
    for c in s["classes"]:
        by_cat[c["category"]] += c["tests"]
    lines += ["", "## By category", "", "| category | tests |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in by_cat.most_common()]
    lines += ["", "## Per file", "", "| file | passed | failed | error | skipped (cpu-only) | skipped | uncollected |"]
    lines.append("|---|---:|---:|---:|---:|---:|---:|")
    for f, c in s["per_file"].items():
        lines.append(
            f"| {f} | {c.get('passed', 0)} | {c.get('failed', 0)} | {c.get('error', 0)} | "
            f"{c.get('skipped-accelerator', 0)} | {c.get('skipped', 0)} | {c.get('uncollected', 0)} |"
        )
    if s["collect_errors"]:
        lines += ["", "## Import errors", ""]
        for f, m in s["collect_errors"].items():
            tail = m.strip().splitlines()[-1] if m.strip() else ""
            lines.append(f"- {f}: `{tail[:200]}`")
    return "\n".join(lines) + "\n"


def read_records(path: Path) -> list[dict[str, Any]]:
    out = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                out.append(json.loads(line))
    return out


def main(argv: list[str] | None = None) -> int:
    global HANG_GRACE
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--fetch", nargs="?", const=str(DEFAULT_CACHE), metavar="DIR", help="download into DIR")
    src.add_argument("--upstream", metavar="DIR", help="an extracted tree (holding caffe2/)")
    ap.add_argument("--files", nargs="*", help="test files (names or globs) under operator_test; default all")
    ap.add_argument("--timeout", type=int, default=120, help="per-test timeout in seconds (pytest-timeout)")
    ap.add_argument("--chunk", type=int, default=12, help="test files per pytest subprocess")
    ap.add_argument(
        "--hang-grace",
        type=int,
        default=HANG_GRACE,
        help="seconds past --timeout before a stuck test's process is ended",
    )
    ap.add_argument("--chunk-timeout", type=int, default=1800, help="seconds before a subprocess is killed")
    ap.add_argument("--profile", default=os.environ.get("CAFFE2_HYPOTHESIS_PROFILE", "dev"))
    ap.add_argument("--results", metavar="JSONL", help="raw per-phase records (appended); default a temp file")
    ap.add_argument("--from-results", metavar="JSONL", help="only re-report these records")
    ap.add_argument("--report", metavar="MD", help="write the markdown report here (and the JSON beside it)")
    args = ap.parse_args(argv)

    HANG_GRACE = args.hang_grace
    if args.from_results is None and args.fetch is None and args.upstream is None:
        args.upstream = str(DEFAULT_CACHE / "upstream")
    upstream = Path(args.upstream) if args.upstream else None
    if args.fetch is not None:
        upstream = fetch(Path(args.fetch))
    if upstream is not None and not (upstream / OPERATOR_TESTS).is_dir():
        print(f"error: {upstream} has no {OPERATOR_TESTS} (use --fetch or --upstream DIR)", file=sys.stderr)
        return 1

    start = time.time()
    if args.from_results:
        results = Path(args.from_results)
        files = test_files(upstream, args.files) if upstream else []
    else:
        assert upstream is not None
        files = test_files(upstream, args.files)
        if not files:
            print(f"error: no test files match {args.files}", file=sys.stderr)
            return 1
        results = Path(args.results) if args.results else Path(tempfile.mkstemp(suffix=".jsonl")[1])
        for i in range(0, len(files), args.chunk):
            chunk = files[i : i + args.chunk]
            rc = run_files(chunk, upstream, results, args.timeout, args.chunk_timeout, args.profile)
            print(f"[{time.time() - start:6.0f}s] {i + len(chunk)}/{len(files)} files (rc {rc})", flush=True)
    summary = summarize(read_records(results), files, shipped_modules(upstream))
    meta = {
        "command": " ".join(["python tools/caffe2_suite.py", *(argv if argv is not None else sys.argv[1:])]),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "wall_s": time.time() - start,
        "profile": args.profile,
        "timeout": args.timeout,
        "results": str(results),
    }
    text = markdown(summary, meta)
    if args.report:
        Path(args.report).write_text(text, encoding="utf-8")
        Path(args.report).with_suffix(".json").write_text(json.dumps({**meta, **summary}, indent=1), encoding="utf-8")
    print(text.split("## Failure classes")[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
