"""``asyncnet train-digits``: train an MLP or LeNet on scikit-learn's digits, save and reload it."""

from __future__ import annotations

import argparse
import sys

from asyncnet.commands._common import add_io_policy_args, io_policy_from_args
from asyncnet.iopolicy import IOPolicy
from asyncnet.training.digits import MODELS, DigitsConfig, evaluate_saved, save_model, train_digits


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "train-digits",
        help="train a small net on the bundled 8x8 digits (needs scikit-learn, tqdm) and save its parameters",
    )
    p.add_argument("--model", choices=MODELS, default=DigitsConfig.model, help="network (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=DigitsConfig.epochs, help="passes over the training set")
    p.add_argument("--batch-size", type=int, default=DigitsConfig.batch_size)
    p.add_argument("--lr", type=float, default=DigitsConfig.base_lr, help="base learning rate (momentum SGD)")
    p.add_argument("--momentum", type=float, default=DigitsConfig.momentum)
    p.add_argument("--seed", type=int, default=DigitsConfig.seed, help="seed of the split, init and batches")
    p.add_argument("--executor", default=DigitsConfig.executor, help="executor of the train net")
    p.add_argument("--threads", type=int, default=DigitsConfig.threads, help="executor threads")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    p.add_argument("--out", default=None, help="directory for init_net/predict_net (default: do not save)")
    p.add_argument("--binary", action="store_true", help="save .pb instead of .pbtxt")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_io_policy_args(p)
    p.add_argument(
        "--workers", type=int, default=1, help="data-parallel worker processes (Gloo via the 'distributed' extra)"
    )
    p.add_argument("--trace", metavar="FILE", help="data-parallel: Chrome trace of rank 0's train steps")
    p.add_argument(
        "--bucket-kb",
        type=int,
        default=None,
        help="data-parallel: cap of the first gradient bucket in KB (default 1024, as PyTorch DDP: this "
        "model's gradients fit one bucket; smaller starts the all-reduce of the last layers during the "
        "backward pass, e.g. 16 shows the overlap in --trace; 0: one Allreduce per gradient, as Caffe2)",
    )
    p.set_defaults(func=run)


def digits_config(args: argparse.Namespace, *, progress: bool, io_policy: IOPolicy | None = None) -> DigitsConfig:
    """The training settings the ``train-digits`` arguments ask for (one process or one rank)."""
    return DigitsConfig(
        model=args.model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        base_lr=args.lr,
        momentum=args.momentum,
        seed=args.seed,
        executor=args.executor,
        threads=args.threads,
        max_steps=args.max_steps,
        progress=progress,
        io_policy=io_policy,
    )


def run(args: argparse.Namespace) -> int:
    from asyncnet.distributed.launch import world_from_env

    if args.workers > 1 or world_from_env() is not None:
        from asyncnet.distributed.digits_command import run_data_parallel

        return run_data_parallel(args)
    cfg = digits_config(
        args, progress=not args.no_progress and sys.stderr.isatty(), io_policy=io_policy_from_args(args)
    )
    result, params_net, predict_net = train_digits(cfg)
    out = sys.stdout
    first = sum(result.losses[:10]) / max(len(result.losses[:10]), 1)
    last = sum(result.losses[-10:]) / max(len(result.losses[-10:]), 1)
    out.write(
        f"{cfg.model}: {result.steps} steps in {result.seconds:.1f}s (executor {cfg.executor}); "
        f"loss {first:.4f} -> {last:.4f}\n"
        f"train accuracy {result.train_accuracy:.4f}, test accuracy {result.test_accuracy:.4f}\n"
    )
    if args.out:
        init_path, predict_path = save_model(args.out, params_net, predict_net, binary=args.binary)
        acc, _ = evaluate_saved(init_path, predict_path, seed=cfg.seed)
        out.write(f"saved {init_path} and {predict_path}; reloaded test accuracy {acc:.4f}\n")
    return 0
