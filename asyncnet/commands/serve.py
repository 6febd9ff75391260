"""``asyncnet serve MODEL_DIR... --port N``: serve models over gRPC until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from asyncnet.commands._common import add_io_policy_args
from asyncnet.errors import ServingError
from asyncnet.executors import ExecutorOptions
from asyncnet.iopolicy import IOPolicy


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="serve model folders (init_net.pb, predict_net.pb, value_info.json) over gRPC",
        description="Serve each MODEL_DIR (the model-zoo layout; the folder name is the model name) with the "
        "asyncnet.serving.PredictionService gRPC service and the standard grpc health service. Runs until "
        "SIGTERM or SIGINT, then finishes the requests in flight (up to --grace seconds). Nets may read files "
        "only inside their model folder and write none unless --allow-write is given.",
    )
    p.add_argument("models", nargs="+", metavar="MODEL_DIR", help="model folder(s)")
    p.add_argument("--port", type=int, default=50051, help="TCP port (0: pick a free one; default 50051)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help="requests computed at once per process (default 1 with several workers, else the CPU count)",
    )
    p.add_argument("--queue-limit", type=int, default=64, metavar="N", help="requests waiting beyond that (default 64)")
    p.add_argument("--max-message-mb", type=float, default=64.0, metavar="MB", help="largest request (default 64)")
    p.add_argument("--grace", type=float, default=30.0, metavar="S", help="on shutdown, time to finish (default 30)")
    p.add_argument("--batching", action="store_true", help="dynamic batching (batch-independent nets only)")
    p.add_argument("--max-batch", type=int, default=8, metavar="N", help="rows per batch with --batching (default 8)")
    p.add_argument(
        "--max-delay-ms", type=float, default=2.0, metavar="MS", help="wait for a batch to fill (default 2 ms)"
    )
    p.add_argument(
        "--blas-threads",
        type=int,
        metavar="N",
        help="BLAS threads per request (default 1: requests run concurrently instead; 0: leave BLAS alone)",
    )
    p.add_argument(
        "--no-optimize",
        action="store_true",
        help="serve the nets as they are (default: rewrite them for inference once the parameters are loaded)",
    )
    p.add_argument("--executor", metavar="NAME", help="override the predict nets' NetDef.type")
    p.add_argument("--threads", type=int, metavar="N", help="worker threads per device pool (async executors)")
    add_io_policy_args(
        p,
        "Ops of a served net may read files under its model folder and write none; anything else is refused "
        "when the model loads.",
    )
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="server processes sharing the port (default: the usable CPUs, at most 8). Python kernels hold the GIL, so the "
        "threads of one process share about one core; each process loads the models (parameters once per process)",
    )
    p.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--supervisor-pid", type=int, default=0, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def _worker_argv(args: argparse.Namespace, port: int) -> list[str]:
    argv = [
        *("serve", *args.models, "--port", str(port), "--host", args.host, "--reuse-port", "--workers", "1"),
        *("--supervisor-pid", str(os.getpid())),
    ]
    argv += ["--queue-limit", str(args.queue_limit), "--max-message-mb", str(args.max_message_mb)]
    argv += ["--grace", str(args.grace), "--max-batch", str(args.max_batch), "--max-delay-ms", str(args.max_delay_ms)]
    for flag, value in (
        ("--concurrency", args.concurrency),
        ("--blas-threads", args.blas_threads),
        ("--executor", args.executor),
        ("--threads", args.threads),
    ):
        if value is not None:
            argv += [flag, str(value)]
    if args.batching:
        argv.append("--batching")
    if args.no_optimize:
        argv.append("--no-optimize")
    for d in args.allow_write:
        argv += ["--allow-write", d]
    for d in args.allow_read:
        argv += ["--allow-read", d]
    if args.allow_any_path:
        argv.append("--allow-any-path")
    return argv


def _supervise(args: argparse.Namespace) -> int:
    from asyncnet.serving.supervisor import Workers, reserve_port

    holder = reserve_port(args.host, args.port)
    port = int(holder.getsockname()[1])
    workers = Workers(_worker_argv(args, port), args.workers)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        workers.start()
        banner = workers.banner[0].replace("serving on", f"serving with {args.workers} worker processes on", 1)
        sys.stdout.write("\n".join([banner, *workers.banner[1:]]) + "\n")
        sys.stdout.flush()
        while not stop.wait(0.5):
            if any(p.poll() is not None for p in workers.procs):
                break
        sys.stdout.write(f"shutting down: finishing requests in flight (up to {args.grace:g} s)\n")
        sys.stdout.flush()
    finally:
        workers.stop()
        codes = workers.wait()
        holder.close()
        for s, h in previous.items():
            signal.signal(s, h)
    sys.stdout.write(f"stopped after {workers.requests_served()} request(s)\n")
    bad = [c for c in codes if c != 0]
    if bad:
        raise ServingError(f"{len(bad)} of {len(codes)} worker(s) exited with an error (statuses {bad})")
    return 0


def run(args: argparse.Namespace) -> int:
    from asyncnet.commands._common import IO_POLICY_HINT, warn
    from asyncnet.executors.pools import default_threads
    from asyncnet.serving import BatchingOptions, PredictionServer, Predictor, ServerOptions

    if args.allow_any_path and not args.reuse_port:
        warn("--allow-any-path: served nets may read and write any file you can (Caffe2's behaviour)")
    if args.workers is None:
        # Each worker holds its own copy of the models: beyond a few, memory grows for little gain.
        args.workers = 1 if args.reuse_port else min(default_threads(), 8)
    if args.workers < 1:
        raise ServingError(f"--workers must be at least 1, got {args.workers}")
    if args.workers > 1:
        if args.concurrency is None:
            # One request at a time per process: two in one process convoy on the GIL.
            args.concurrency = 1
        return _supervise(args)

    names: dict[str, str] = {}
    for folder in args.models:
        name = Path(folder).resolve().name
        if name in names:
            raise ServingError(f"model folders {names[name]} and {folder} have the same name '{name}'")
        names[name] = folder
    batching = BatchingOptions(args.max_batch, args.max_delay_ms) if args.batching else None
    options = ExecutorOptions(threads=args.threads)
    predictors: list[Predictor] = []
    try:
        for folder in args.models:
            policy = IOPolicy.restricted(
                read=[folder, *args.allow_read, *args.allow_write], write=args.allow_write, hint=IO_POLICY_HINT
            )
            if args.allow_any_path:
                policy = IOPolicy.permissive()
            predictors.append(
                Predictor.from_dir(
                    folder,
                    io_policy=policy,
                    batching=batching,
                    executor=args.executor,
                    options=options,
                    max_concurrency=args.concurrency,
                    optimize=not args.no_optimize,
                )
            )
        server = PredictionServer(
            predictors,
            ServerOptions(
                host=args.host,
                port=args.port,
                concurrency=args.concurrency,
                queue_limit=args.queue_limit,
                max_message_bytes=int(args.max_message_mb * 1024 * 1024),
                grace_s=args.grace,
                blas_threads=args.blas_threads,
                reuse_port=args.reuse_port,
            ),
            own_models=True,
        )
    except BaseException:
        for p in predictors:
            p.close()
        raise
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        port = server.start()
        lines = [f"serving on {args.host}:{port} (concurrency {server.concurrency}, queue limit {args.queue_limit})"]
        for p in predictors:
            batch = f", batching up to {args.max_batch}" if p.batching_enabled else ""
            lines.append(
                f"  model '{p.name}': inputs {p.describe_inputs()}; "
                f"outputs {', '.join(p.output_specs[n].describe() for n in p.output_names)}{batch}"
            )
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
        # A worker of `--workers N` whose supervisor was killed would serve forever with nobody to
        # forward a signal: it stops by itself (gracefully) once its parent is gone.
        # The supervisor's pid comes on the command line: read here, getppid() would already be 1 (or
        # a subreaper) when the supervisor was killed while this worker was still starting.
        parent = (args.supervisor_pid or os.getppid()) if args.reuse_port else None
        while not stop.wait(0.5):
            if parent is not None and os.getppid() != parent:
                break
        sys.stdout.write(f"shutting down: finishing requests in flight (up to {args.grace:g} s)\n")
        sys.stdout.flush()
    finally:
        server.stop()
        for s, h in previous.items():
            signal.signal(s, h)
    sys.stdout.write(f"stopped after {server.computed} request(s)\n")
    return 0
