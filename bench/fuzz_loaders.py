"""Fuzz every asyncnet loader with mutated real files; report error types and crashes.

Usage:
    .venv/bin/python bench/fuzz_loaders.py [--cases 10000] [--seed 0] [--only netdef,npz] [--crashes DIR]

Each *target* is a loader (NetDef/PlanDef/TensorProto(s)/BlobProto parsing and
conversion, ``asyncnet info``'s description, net preparation, .npz inputs,
minidb/protodb checkpoints, and the Caffe/ONNX importers when present). Seeds
are the files under ../shared/realnets plus generated ones; each case applies a
seeded byte-level or protobuf-level mutation. A case passes when the loader
returns or raises an ``AsyncNetError``; any other exception is a crash, a case
running past ``--limit`` seconds a hang. Exit status 1 on any crash or hang.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import signal
import sys
import tempfile
import time
import traceback
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from asyncnet.errors import AsyncNetError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import make_argument, numpy_to_tensor, parse_message, tensor_to_numpy, tensors_to_dict

ROOT = Path(__file__).resolve().parents[1]
REALNETS = Path(os.environ.get("ASYNCNET_REALNETS", ROOT.parent / "shared" / "realnets"))
MAX_SEED_BYTES = 48 * 1024  # bigger text nets take ~1 s per parse


class Hang(BaseException):
    """Raised by the alarm when a case runs too long (BaseException: library code must not swallow it)."""


@dataclass
class TargetReport:
    cases: int = 0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    crashes: list[str] = field(default_factory=list)
    hangs: list[str] = field(default_factory=list)
    max_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "cases": self.cases,
            "ok": self.ok,
            "errors": dict(self.errors.most_common()),
            "crashes": len(self.crashes),
            "hangs": len(self.hangs),
            "max_seconds": round(self.max_seconds, 3),
            "first_crashes": self.crashes[:5],
        }


@dataclass
class Target:
    name: str
    seeds: list[bytes]
    run: Callable[[bytes], Any]
    structural: Callable[[random.Random, bytes], bytes] | None = None


# ---------------------------------------------------------------------------
# Seeds


def _read_seeds(patterns: list[str]) -> list[bytes]:
    out: list[bytes] = []
    if not REALNETS.exists():
        return out
    for pat in patterns:
        for p in sorted(REALNETS.glob(pat)):
            if p.is_file() and p.stat().st_size <= MAX_SEED_BYTES:
                out.append(p.read_bytes())
    return out


def _operator_test_ops() -> list[bytes]:
    out = []
    for z in sorted(REALNETS.glob("caffe2_serialized_operator_tests/*.zip"))[:40]:
        with zipfile.ZipFile(z) as f:
            for n in f.namelist():
                if n.endswith(".pb"):
                    out.append(f.read(n))
    return out


def _tensor_seeds() -> list[pb.TensorProto]:
    rng = np.random.default_rng(0)
    ts = [
        numpy_to_tensor(rng.standard_normal((2, 3)).astype(np.float32), "f"),
        numpy_to_tensor(rng.standard_normal((2, 3)).astype(np.float32), "raw", raw=True),
        numpy_to_tensor(np.arange(6, dtype=np.int64).reshape(3, 2), "i64"),
        numpy_to_tensor(np.arange(4, dtype=np.int32), "i32"),
        numpy_to_tensor(np.array([True, False]), "b"),
        numpy_to_tensor(np.ones(3, np.float16), "h"),
        numpy_to_tensor(np.array([b"ab", b"c"], dtype=object), "s"),
        numpy_to_tensor(np.arange(5, dtype=np.uint8), "u8"),
        numpy_to_tensor(np.zeros((0, 4), np.float64), "empty"),
    ]
    seg = numpy_to_tensor(np.arange(3, dtype=np.float32), "seg")
    del seg.dims[:]
    seg.dims.extend([6])
    seg.segment.begin, seg.segment.end = 3, 6
    ts.append(seg)
    return ts


def _net_seeds() -> list[bytes]:
    seeds = _read_seeds(
        [
            "caffe2_model_zoo/*/*.pb",
            "caffe2_model_zoo/*/*.pbtxt",
            "caffe2_model_zoo/*/*/*.pb",
            "caffe2_model_zoo/*/*/*.pbtxt",
            "caffe2_repo_assets/*.pb",
            "third_party_caffe2_exports/*/*.pb",
        ]
    )
    for p in sorted((ROOT / "nets").glob("*.pbtxt")):
        seeds.append(p.read_bytes())
    return seeds


def _npz_seeds() -> list[bytes]:
    seeds = [p.read_bytes() for p in sorted((ROOT / "nets").glob("*.npz"))]
    buf = io.BytesIO()
    np.savez_compressed(buf, a=np.arange(10, dtype=np.float32), b=np.ones((2, 2)))
    seeds.append(buf.getvalue())
    buf = io.BytesIO()
    np.save(buf, np.arange(3))
    seeds.append(buf.getvalue())
    return seeds


def _checkpoint_seeds(db_type: str) -> list[bytes]:
    from asyncnet.db import save_checkpoint

    seeds = []
    with tempfile.TemporaryDirectory() as d:
        samples: list[dict[str, Any]] = [
            {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.arange(3, dtype=np.int64)},
            {
                "s": np.array([b"x", b"yz"], dtype=object),
                "e": np.zeros((0,), np.float32),
                "h": np.ones(4, np.float16),
            },
        ]
        for i, blobs in enumerate(samples):
            p = Path(d) / f"{i}.{db_type}"
            save_checkpoint(p, blobs, db_type, chunk_size=5)
            seeds.append(p.read_bytes())
    return seeds


# ---------------------------------------------------------------------------
# Mutations

INTERESTING_INTS = [0, -1, 1, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63), 10**12, 2**40, 255, 65536]
INTERESTING_TEXT = [b"-1", b"0", b"99999999999999999999999", b"1e400", b"-2147483649", b"nan", b"\xff\xfe", b'"', b"{"]


def mutate_bytes(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    buf = bytearray(data)
    n = len(buf)
    kind = rng.randrange(10)
    if n == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
    if kind == 0:
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(n)] ^= 1 << rng.randrange(8)
    elif kind == 1:
        del buf[rng.randrange(n) :]
    elif kind == 2:
        a = rng.randrange(n)
        del buf[a : a + rng.randint(1, 64)]
    elif kind == 3:
        a = rng.randrange(n + 1)
        buf[a:a] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    elif kind == 4:
        a = rng.randrange(n)
        b = min(n, a + rng.randint(1, 256))
        buf[a:a] = buf[a:b] * rng.randint(1, 4)
    elif kind == 5:
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(n)] = rng.choice([0x00, 0xFF, 0x7F, 0x80, 0x0A, 0x22, 0x7B, 0x7D])
    elif kind == 6:
        other = rng.choice(pool)
        if other:
            a, b = rng.randrange(n), rng.randrange(len(other))
            buf = buf[:a] + other[b : b + rng.randint(1, 512)]
    elif kind == 7:
        # Text-level: swap a number token for an extreme value.
        digits = [i for i in range(min(n, 200_000)) if 0x30 <= buf[i] <= 0x39]
        if digits:
            a = rng.choice(digits)
            b = a
            while b < n and (0x30 <= buf[b] <= 0x39 or buf[b] in b".e-"):
                b += 1
            buf[a:b] = rng.choice(INTERESTING_TEXT)
    elif kind == 8:
        lines = bytes(buf).split(b"\n")
        i = rng.randrange(len(lines))
        if rng.random() < 0.5:
            lines.insert(i, lines[rng.randrange(len(lines))])
        else:
            del lines[i]
        buf = bytearray(b"\n".join(lines))
    else:
        # Varint-level: overwrite a byte run with an extreme varint.
        a = rng.randrange(n)
        v = rng.choice(INTERESTING_INTS) & (2**64 - 1)
        enc = bytearray()
        while True:
            byte = v & 0x7F
            v >>= 7
            enc.append(byte | (0x80 if v else 0))
            if not v:
                break
        buf[a : a + len(enc)] = enc
    return bytes(buf)


_PARSED: dict[bytes, bytes | None] = {}


def _parse_any_net(data: bytes) -> pb.NetDef | None:
    """Parse (cached per seed: text parsing is the slow part of a case)."""
    if data not in _PARSED:
        if len(_PARSED) > 256:
            _PARSED.clear()
        try:
            _PARSED[data] = parse_message(data, pb.NetDef).SerializeToString()
        except AsyncNetError:
            _PARSED[data] = None
    raw = _PARSED[data]
    return None if raw is None else pb.NetDef.FromString(raw)


OP_TYPES = ["Relu", "FC", "Conv", "Concat", "Sum", "If", "Reshape", "Softmax", "ConstantFill", "Add", "Python", ""]


def _deep_net(depth: int) -> pb.NetDef:
    net = pb.NetDef(name="leaf")
    net.op.add(type="Relu", input=["x"], output=["x"])
    for i in range(depth):
        outer = pb.NetDef(name=f"level{i}")
        op = outer.op.add(type="If", input=["cond"], output=["x"])
        op.arg.add(name="then_net").n.CopyFrom(net)
        net = outer
    return net


def mutate_net(rng: random.Random, data: bytes) -> bytes:
    """A parseable but damaged NetDef (binary)."""
    net = _parse_any_net(data)
    if net is None or not net.op:
        net = _deep_net(rng.randint(1, 5))
    for _ in range(rng.randint(1, 3)):
        op = net.op[rng.randrange(len(net.op))]
        kind = rng.randrange(12)
        if kind == 0 and op.input:
            del op.input[rng.randrange(len(op.input))]
        elif kind == 1:
            op.output.append(rng.choice([*op.input, "fresh", ""]))
        elif kind == 2:
            op.type = rng.choice(OP_TYPES)
        elif kind == 3 and op.arg:
            a = op.arg[rng.randrange(len(op.arg))]
            a.Clear()
            a.name = rng.choice(["kernel", "stride", "pad", "axis", "shape", "order", "dims", "value", "dtype"])
            setter = rng.randrange(6)
            if setter == 0:
                a.i = rng.choice(INTERESTING_INTS)
            elif setter == 1:
                a.f = rng.choice([float("nan"), float("inf"), -0.0, 1e300])
            elif setter == 2:
                a.s = rng.choice([b"", b"\xff\xfe", b"NCHW", b"x" * 1000])
            elif setter == 3:
                a.ints.extend(rng.choice(INTERESTING_INTS) for _ in range(rng.randint(0, 5)))
            elif setter == 4:
                t = a.t
                t.dims.extend(rng.choice(INTERESTING_INTS) for _ in range(rng.randint(0, 3)))
                t.data_type = rng.choice([1, 2, 3, 8, 10, 12])  # type: ignore[assignment]
                t.float_data.extend([1.0] * rng.randint(0, 3))
            else:
                a.n.CopyFrom(_deep_net(rng.randint(0, 3)))
        elif kind == 4:
            op.arg.add().CopyFrom(op.arg[0] if op.arg else make_argument("x", 1))
            op.arg.add().CopyFrom(op.arg[-1])
        elif kind == 5:
            op.device_option.device_type = rng.choice([0, 1, 6, 99, -1])
            op.engine = rng.choice(["", "CUDNN", "NNPACK,MOBILE", "\u00e9"])
        elif kind == 6:
            ops = list(net.op)
            rng.shuffle(ops)
            del net.op[:]
            net.op.extend(ops)
        elif kind == 7:
            net.external_output.append(rng.choice(["never_made", *op.output, *op.input]))
        elif kind == 8:
            op.input.extend(op.input)
        elif kind == 9:
            net.op.add().CopyFrom(_deep_net(rng.randint(1, 40)).op[0])
        elif kind == 10:
            op.control_input.append(rng.choice(["ctl", *op.output]))
        else:
            net.type = rng.choice(["", "dag", "async_scheduling", "simple", "bogus", "prof_dag"])
            net.num_workers = rng.choice([0, 1, -1, 10**6])
    return net.SerializeToString()


def mutate_tensor(rng: random.Random, data: bytes) -> bytes:
    """A parseable but inconsistent TensorProto."""
    t = pb.TensorProto()
    with contextlib.suppress(Exception):
        t.ParseFromString(data)
    kind = rng.randrange(8)
    if kind == 0:
        del t.dims[:]
        t.dims.extend(rng.choice(INTERESTING_INTS) for _ in range(rng.randint(1, 4)))
    elif kind == 1:
        t.data_type = rng.choice(list(pb.TensorProto.DataType.values()))  # type: ignore[assignment]
    elif kind == 2:
        t.segment.begin = rng.choice(INTERESTING_INTS)
        t.segment.end = rng.choice(INTERESTING_INTS)
    elif kind == 3:
        t.raw_data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))
    elif kind == 4:
        t.int32_data.extend(rng.choice(INTERESTING_INTS[:7]) & 0x7FFFFFFF for _ in range(rng.randint(1, 5)))
    elif kind == 5:
        t.data_format = rng.choice([0, 1, 2, 99])
    elif kind == 6:
        t.string_data.append(b"\xff\xfe")
        t.name = "dup"
    else:
        t.byte_data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 20)))
    return t.SerializeToString()


def mutate_blob(rng: random.Random, data: bytes) -> bytes:
    b = pb.BlobProto()
    with contextlib.suppress(Exception):
        b.ParseFromString(data)
    b.tensor.CopyFrom(pb.TensorProto.FromString(mutate_tensor(rng, b.tensor.SerializeToString())))
    if rng.random() < 0.3:
        b.type = rng.choice(["Tensor", "std::string", "", "QTensor", "Mystery"])
    if rng.random() < 0.2:
        b.content_num_chunks = rng.choice(INTERESTING_INTS[:5])
    return b.SerializeToString()


def mutate_tensors(rng: random.Random, data: bytes) -> bytes:
    ts = pb.TensorProtos()
    with contextlib.suppress(Exception):
        ts.ParseFromString(data)
    if ts.protos and rng.random() < 0.5:
        i = rng.randrange(len(ts.protos))
        ts.protos[i].CopyFrom(pb.TensorProto.FromString(mutate_tensor(rng, ts.protos[i].SerializeToString())))
    else:
        ts.protos.add().CopyFrom(ts.protos[0] if ts.protos else pb.TensorProto(name="x"))
    return ts.SerializeToString()


# ---------------------------------------------------------------------------
# Targets


@contextlib.contextmanager
def _temp_file(suffix: str) -> Iterator[Path]:
    fd, name = tempfile.mkstemp(suffix=suffix)
    os.close(fd)
    try:
        yield Path(name)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)


def build_targets() -> dict[str, Target]:
    from asyncnet.commands._common import load_npz
    from asyncnet.commands.info import describe_net
    from asyncnet.db import load_checkpoint
    from asyncnet.net import Net
    from asyncnet.workspace import Workspace

    nets = _net_seeds()
    tensors = _tensor_seeds()
    tensor_bytes = [t.SerializeToString() for t in tensors] + _read_seeds(["onnx_light_models/*_output_0.pb"])
    blob_seeds = [pb.BlobProto(name=t.name, type="Tensor", tensor=t).SerializeToString() for t in tensors]
    blob_seeds.append(pb.BlobProto(name="s", type="std::string", content=b"abc").SerializeToString())
    tensors_seeds = [pb.TensorProtos(protos=tensors[i : i + 3]).SerializeToString() for i in range(0, len(tensors), 3)]
    # Text forms too: every loader detects and parses protobuf text as well as binary.
    tensor_bytes += [str(t).encode() for t in tensors[:4]]
    blob_seeds += [str(pb.BlobProto.FromString(b)).encode() for b in blob_seeds[:3]]
    tensors_seeds += [str(pb.TensorProtos.FromString(b)).encode() for b in tensors_seeds[:2]]
    plan_seeds = []
    for raw in nets[:6]:
        net = _parse_any_net(raw)
        if net is not None:
            plan = pb.PlanDef(name="plan", network=[net])
            plan.execution_step.add(name="step", network=[net.name], num_iter=2)
            plan_seeds.append(plan.SerializeToString())
            plan_seeds.append(str(plan).encode())

    def netdef(data: bytes) -> None:
        describe_net(parse_message(data, pb.NetDef))

    def prepare(data: bytes) -> None:
        net = parse_message(data, pb.NetDef)
        ws = Workspace()
        Net(net, ws).close()

    def plandef(data: bytes) -> None:
        plan = parse_message(data, pb.PlanDef)
        for n in plan.network:
            describe_net(n)

    def tensor(data: bytes) -> None:
        tensor_to_numpy(parse_message(data, pb.TensorProto))

    def tensors_target(data: bytes) -> None:
        tensors_to_dict(parse_message(data, pb.TensorProtos).protos)

    def blob(data: bytes) -> None:
        b = parse_message(data, pb.BlobProto)
        if b.HasField("tensor"):
            tensor_to_numpy(b.tensor)

    def npz(data: bytes) -> None:
        with _temp_file(".npz") as p:
            p.write_bytes(data)
            load_npz(p)

    def checkpoint(db_type: str) -> Callable[[bytes], None]:
        def run(data: bytes) -> None:
            with _temp_file("." + db_type) as p:
                p.write_bytes(data)
                load_checkpoint(p, db_type)

        return run

    def check_and_run(data: bytes) -> None:
        # The whole `asyncnet check` + `asyncnet run` path on a bundled net: parse, check,
        # prepare and, when the checker proves every blob small, run it.
        from asyncnet.checker import check_net
        from asyncnet.shapes import info_of

        net = parse_message(data, pb.NetDef)
        ws = Workspace()
        init = parse_message((ROOT / "nets" / "mlp_init.pbtxt").read_bytes(), pb.NetDef)
        ws.run_net_once(init)
        for name, value in RUN_INPUTS.items():
            ws.feed(name, value)
        report = check_net(net, inputs={n: info_of(ws.fetch(n)) for n in ws.blobs()})
        with Net(net, ws, executor="simple") as prepared:
            small = report.ok and all(
                ti.shape is not None and all(d is not None and d <= 4096 for d in ti.shape) and len(ti.shape) <= 6
                for ti in report.shapes.values()
            )
            if small:
                prepared.run()

    run_seeds = [(ROOT / "nets" / n).read_bytes() for n in ("mlp_predict.pbtxt", "branches.pbtxt")]

    targets = {
        "check_and_run": Target("check_and_run", run_seeds, check_and_run, mutate_net),
        "netdef": Target("netdef", nets, netdef, mutate_net),
        "net_prepare": Target("net_prepare", nets, prepare, mutate_net),
        "plandef": Target("plandef", plan_seeds, plandef),
        "tensorproto": Target("tensorproto", tensor_bytes, tensor, mutate_tensor),
        "tensorprotos": Target("tensorprotos", tensors_seeds, tensors_target, mutate_tensors),
        "blobproto": Target("blobproto", blob_seeds, blob, mutate_blob),
        "npz": Target("npz", _npz_seeds(), npz),
        "minidb": Target("minidb", _checkpoint_seeds("minidb"), checkpoint("minidb")),
        "protodb": Target("protodb", _checkpoint_seeds("protodb"), checkpoint("protodb"), mutate_tensors),
        "op_def": Target("op_def", _operator_test_ops(), lambda d: describe_op(d)),
    }
    targets.update(_optional_targets())
    return {k: v for k, v in targets.items() if v.seeds}


RUN_INPUTS = {
    "data": np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4),
    "x": np.linspace(-1, 1, 64, dtype=np.float32).reshape(4, 16),
}


def describe_op(data: bytes) -> None:
    from asyncnet.net import op_info

    op = parse_message(data, pb.OperatorDef)
    with contextlib.suppress(AsyncNetError):
        op_info(op)


TINY_CAFFE_PROTOTXT = b"""name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 2 } }
layer { name: "relu" type: "ReLU" bottom: "ip" top: "ip" }
"""


def _tiny_caffemodel() -> bytes:
    """Weights for TINY_CAFFE_PROTOTXT as a binary caffe.NetParameter."""
    from asyncnet.proto import caffe_pb2 as cpb

    net = cpb.NetParameter(name="tiny")
    layer = net.layer.add(name="ip", type="InnerProduct")
    w = layer.blobs.add()
    w.shape.dim.extend([2, 3])
    w.data.extend([0.5, -1.0, 2.0, 0.25, 1.5, -0.5])
    b = layer.blobs.add()
    b.shape.dim.extend([2])
    b.data.extend([0.1, -0.1])
    return net.SerializeToString()


def _optional_targets() -> dict[str, Target]:
    """Importers that other parts of the project provide (used when they exist)."""
    import importlib

    out: dict[str, Target] = {}
    translate_files: Callable[..., Any] | None = None
    import_onnx: Callable[..., Any] | None = None
    with contextlib.suppress(ImportError, AttributeError):
        translate_files = importlib.import_module("asyncnet.caffe").translate_files
    with contextlib.suppress(ImportError, AttributeError):
        import_onnx = importlib.import_module("asyncnet.onnx").import_onnx
    if translate_files is not None:
        translate = translate_files
        seeds = _read_seeds(["caffe_*/*.prototxt", "caffe_*/*/*.prototxt", "caffe_bvlc/*/*/*.prototxt"])

        def caffe(data: bytes) -> None:
            with _temp_file(".prototxt") as p:
                p.write_bytes(data)
                translate(p, None)

        out["caffe_prototxt"] = Target("caffe_prototxt", seeds, caffe)

        def caffemodel(data: bytes) -> None:
            with _temp_file(".prototxt") as proto, _temp_file(".caffemodel") as model:
                proto.write_bytes(TINY_CAFFE_PROTOTXT)
                model.write_bytes(data)
                translate(proto, model)

        out["caffemodel"] = Target("caffemodel", [_tiny_caffemodel()], caffemodel)
    if import_onnx is not None:
        importer = import_onnx
        seeds = _read_seeds(["onnx_light_models/*.onnx"])

        def onnx_target(data: bytes) -> None:
            with _temp_file(".onnx") as p:
                p.write_bytes(data)
                importer(p)

        out["onnx"] = Target("onnx", seeds, onnx_target)
    return out


# ---------------------------------------------------------------------------
# Driver


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise Hang()


def run_target(target: Target, cases: int, seed: int, limit: float, crash_dir: Path | None = None) -> TargetReport:
    rng = random.Random(f"{seed}:{target.name}")
    report = TargetReport()
    use_alarm = hasattr(signal, "setitimer")
    old = signal.signal(signal.SIGALRM, _alarm) if use_alarm else None
    try:
        for case in range(cases):
            base = rng.choice(target.seeds)
            data = b""
            if target.structural is not None and rng.random() < 0.5:
                try:
                    data = target.structural(rng, base)
                except Exception:  # noqa: BLE001 - protobuf refuses some generated messages (too deep)
                    data = b""
                if data and rng.random() < 0.2:
                    data = mutate_bytes(rng, data, target.seeds)
            if not data:
                data = mutate_bytes(rng, base, target.seeds)
            report.cases += 1
            t0 = time.perf_counter()
            try:
                if use_alarm:
                    signal.setitimer(signal.ITIMER_REAL, limit)
                try:
                    target.run(data)
                finally:
                    if use_alarm:
                        signal.setitimer(signal.ITIMER_REAL, 0)
                report.ok += 1
            except AsyncNetError as e:
                report.errors[type(e).__name__] += 1
            except Hang:
                report.hangs.append(f"case {case}: over {limit} s")
                _save(crash_dir, target.name, case, data)
            except Exception as e:  # noqa: BLE001 - a fuzzer reports whatever escapes
                tb = traceback.format_exception(type(e), e, e.__traceback__)
                report.crashes.append(f"case {case}: {type(e).__name__}: {e} @ {tb[-2].strip()[:300]}")
                _save(crash_dir, target.name, case, data)
            report.max_seconds = max(report.max_seconds, time.perf_counter() - t0)
    finally:
        if use_alarm and old is not None:
            signal.signal(signal.SIGALRM, old)
    return report


def _save(crash_dir: Path | None, name: str, case: int, data: bytes) -> None:
    if crash_dir is not None:
        crash_dir.mkdir(parents=True, exist_ok=True)
        (crash_dir / f"{name}_{case}.bin").write_bytes(data)


def run_fuzz(
    cases: int, seed: int = 0, only: list[str] | None = None, limit: float = 10.0, crash_dir: Path | None = None
) -> dict[str, TargetReport]:
    """Run ``cases`` mutations against each target; return the per-target reports."""
    targets = build_targets()
    names = only or sorted(targets)
    unknown = sorted(set(names) - set(targets))
    if unknown:
        raise SystemExit(f"unknown fuzz target(s) {unknown}; known: {', '.join(sorted(targets))}")
    return {n: run_target(targets[n], cases, seed, limit, crash_dir) for n in names}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=10_000, help="cases per loader (default 10000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", help="comma-separated target names (default: all built-in loaders)")
    ap.add_argument(
        "--importers", action="store_true", help="also fuzz the Caffe and ONNX importers (slow: seconds per case)"
    )
    ap.add_argument("--limit", type=float, default=10.0, help="seconds before a case counts as a hang")
    ap.add_argument("--crashes", type=Path, help="folder to save crashing inputs in")
    ap.add_argument("--json", type=Path, help="also write the report as JSON")
    ap.add_argument("--max-seed-kb", type=int, default=48, help="skip seed files larger than this (text parses slowly)")
    args = ap.parse_args(argv)
    only = args.only.split(",") if args.only else None
    if only is None and not args.importers:
        only = sorted(n for n in build_targets() if n not in _optional_targets())
    t0 = time.perf_counter()
    global MAX_SEED_BYTES
    MAX_SEED_BYTES = args.max_seed_kb * 1024
    targets = build_targets()
    names = only or sorted(targets)
    reports: dict[str, TargetReport] = {}
    total_bad = 0
    for name in names:
        if name not in targets:
            raise SystemExit(f"unknown fuzz target '{name}'; known: {', '.join(sorted(targets))}")
        t1 = time.perf_counter()
        r = reports[name] = run_target(targets[name], args.cases, args.seed, args.limit, args.crashes)
        bad = len(r.crashes) + len(r.hangs)
        total_bad += bad
        errors = ", ".join(f"{k} {v}" for k, v in r.errors.most_common())
        sys.stdout.write(
            f"{name:14s} cases {r.cases:6d}  ok {r.ok:6d}  crashes {len(r.crashes)}  hangs {len(r.hangs)}  "
            f"max {r.max_seconds:.2f}s  {time.perf_counter() - t1:.0f}s  errors: {errors}\n"
        )
        for c in r.crashes[:5] + r.hangs[:5]:
            sys.stdout.write(f"    {c}\n")
        sys.stdout.flush()
    sys.stdout.write(f"total {sum(r.cases for r in reports.values())} cases in {time.perf_counter() - t0:.1f} s\n")
    if args.json:
        args.json.write_text(json.dumps({k: v.as_dict() for k, v in reports.items()}, indent=1))
    return 1 if total_bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
