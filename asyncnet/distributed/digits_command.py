"""``asyncnet train-digits --workers N``: the data-parallel path of the command.

Without a launch environment it starts N workers of the same command through
:func:`asyncnet.distributed.launch.launch`; inside a worker (RANK/WORLD_SIZE set) it trains
its shard and rank 0 reports, saves and re-evaluates the model.
"""

from __future__ import annotations

import argparse
import sys

from asyncnet.commands.train_digits import digits_config
from asyncnet.distributed.buckets import DEFAULT_BUCKET_BYTES, DEFAULT_FIRST_BUCKET_BYTES
from asyncnet.distributed.launch import launch, world_from_env
from asyncnet.errors import ArgumentError, AsyncNetError
from asyncnet.training.digits import evaluate_saved, params_init_net, save_model

_FORWARDED = (
    "model",
    "epochs",
    "batch_size",
    "lr",
    "momentum",
    "seed",
    "executor",
    "threads",
    "max_steps",
    "out",
    "bucket_kb",
)


def _argv(args: argparse.Namespace) -> list[str]:
    argv = ["train-digits", "--no-progress"]
    for name in _FORWARDED:
        value = getattr(args, name)
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    if args.binary:
        argv.append("--binary")
    if args.trace:
        argv += ["--trace", args.trace]
    return argv


def bucket_caps(bucket_kb: int | None) -> tuple[int, int]:
    """``--bucket-kb`` as (bucket_bytes, first_bucket_bytes) of :func:`train_digits_data_parallel`."""
    if bucket_kb is None:
        return DEFAULT_BUCKET_BYTES, DEFAULT_FIRST_BUCKET_BYTES
    if bucket_kb < 0:
        raise ArgumentError(f"--bucket-kb must be >= 0, got {bucket_kb}")
    return (0, 0) if bucket_kb == 0 else (DEFAULT_BUCKET_BYTES, bucket_kb << 10)


def run_data_parallel(args: argparse.Namespace) -> int:
    """Launch the workers, or be one."""
    env = world_from_env()
    if env is None:
        if args.workers < 1:
            raise ArgumentError(f"--workers must be >= 1, got {args.workers}")
        bucket_caps(args.bucket_kb)  # refuse a bad value before starting any worker
        launched = launch([sys.executable, "-m", "asyncnet", *_argv(args)], args.workers)
        if not launched.ok:
            sys.stderr.write(
                f"asyncnet train-digits: rank {launched.first_failed} failed; exit codes {launched.returncodes}\n"
            )
            return 1
        return 0
    from asyncnet.distributed.comm import exit_process
    from asyncnet.distributed.digits import train_digits_data_parallel

    cfg = digits_config(args, progress=False)
    try:
        trace = args.trace if env.rank == 0 else None
        caps = bucket_caps(args.bucket_kb)
        result = train_digits_data_parallel(
            cfg, env.rendezvous(prefix="train-digits"), trace=trace, bucket_bytes=caps[0], first_bucket_bytes=caps[1]
        )
    except AsyncNetError as e:
        sys.stderr.write(f"asyncnet train-digits (rank {env.rank}): error: {e}\n")
        exit_process(1, e)
    if env.rank == 0:
        first = sum(result.losses[:10]) / max(len(result.losses[:10]), 1)
        last = sum(result.losses[-10:]) / max(len(result.losses[-10:]), 1)
        sys.stdout.write(
            f"{cfg.model}: {result.steps} steps on {env.size} workers in {result.seconds:.1f}s "
            f"(executor {cfg.executor}); loss {first:.4f} -> {last:.4f}\n"
            f"train accuracy {result.train_accuracy:.4f}, test accuracy {result.test_accuracy:.4f}\n"
        )
        if args.trace:
            sys.stdout.write(f"wrote trace of rank 0's steps to {args.trace}\n")
        if args.out:
            from asyncnet.distributed.digits import build_data_parallel_nets

            predict_net = build_data_parallel_nets(cfg, env.rendezvous())[2]
            init_path, predict_path = save_model(
                args.out, params_init_net(result.params), predict_net, binary=args.binary
            )
            acc, _ = evaluate_saved(init_path, predict_path, seed=cfg.seed)
            sys.stdout.write(f"saved {init_path} and {predict_path}; reloaded test accuracy {acc:.4f}\n")
    sys.stdout.flush()
    exit_process(0)
