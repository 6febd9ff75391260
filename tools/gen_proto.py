"""Regenerate asyncnet/proto/*_pb2.py and *_pb2.pyi from proto/*.proto (and the gRPC code of serving.proto).

Usage: python tools/gen_proto.py [--check]

With --check nothing is written; the exit status is 1 when the committed files
differ from what generation would produce (the test suite runs this check).
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "asyncnet" / "proto"
SCHEMAS = ("caffe2.proto", "caffe.proto", "serving.proto")
# Schemas that define gRPC services (their *_pb2_grpc.py is generated too).
SERVICES = ("serving.proto",)

# protoc writes `import caffe2_pb2 as ...` for `import "caffe2.proto"`; inside the asyncnet.proto
# package the generated modules must import each other by their package path.
_SIBLING_IMPORT = re.compile(rb"^import (\w+_pb2) as (\w+)$", re.MULTILINE)


def _package_imports(data: bytes) -> bytes:
    return _SIBLING_IMPORT.sub(rb"from asyncnet.proto import \1 as \2", data)


def generate(
    proto_dir: Path = PROTO_DIR, schemas: tuple[str, ...] = SCHEMAS, services: tuple[str, ...] = SERVICES
) -> dict[str, bytes]:
    """Run grpcio-tools' protoc and return generated file name -> content."""
    from grpc_tools import protoc  # imported here: only needed by developers

    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{proto_dir}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            *[str(proto_dir / s) for s in schemas],
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {schemas}")
        if services:
            grpc_args = [
                "protoc",
                f"-I{proto_dir}",
                f"--grpc_python_out={tmp}",
                *[str(proto_dir / s) for s in services],
            ]
            if protoc.main(grpc_args) != 0:
                raise RuntimeError(f"protoc (grpc) failed on {services}")
        return {p.name: _package_imports(p.read_bytes()) for p in sorted(Path(tmp).iterdir()) if p.is_file()}


def check(out_dir: Path = OUT_DIR) -> list[str]:
    """Names of generated files that are missing or differ from a fresh generation."""
    return [
        name
        for name, data in generate().items()
        if not (out_dir / name).exists() or (out_dir / name).read_bytes() != data
    ]


def main(argv: list[str]) -> int:
    if "--check" in argv:
        stale = check()
        for name in stale:
            sys.stderr.write(f"stale generated file: asyncnet/proto/{name}\n")
        return 1 if stale else 0
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name, data in generate().items():
        (OUT_DIR / name).write_bytes(data)
        sys.stdout.write(f"wrote asyncnet/proto/{name}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
