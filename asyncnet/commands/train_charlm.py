"""``asyncnet train-charlm``: train the character LSTM on a text, save, reload and sample it."""

from __future__ import annotations

import argparse
import sys

from asyncnet.charlm import CharLMConfig, load_charlm, train_charlm


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "train-charlm",
        help="train a character-level LSTM language model (RecurrentNetwork) on a small text and sample it",
    )
    p.add_argument("--text", default=None, help="UTF-8 text file (default: the bundled Shakespeare sonnets)")
    p.add_argument("--steps", type=int, default=CharLMConfig.steps, help="training steps (default: %(default)s)")
    p.add_argument("--hidden", type=int, default=CharLMConfig.hidden, help="LSTM hidden size")
    p.add_argument("--seq-len", type=int, default=CharLMConfig.seq_len, help="timesteps per batch (BPTT length)")
    p.add_argument("--batch", type=int, default=CharLMConfig.batch, help="parallel streams through the text")
    p.add_argument("--lr", type=float, default=CharLMConfig.lr, help="Adam learning rate")
    p.add_argument("--seed", type=int, default=CharLMConfig.seed)
    p.add_argument("--sequential", action="store_true", help="run timesteps in order (no threaded RNN executor)")
    p.add_argument("--out", default=None, help="directory to save the model to (and reload it from to sample)")
    p.add_argument("--load", default=None, help="skip training: sample from a model saved with --out")
    p.add_argument("--sample", type=int, default=200, help="characters to sample (0: none)")
    p.add_argument("--prime", default="Shall", help="text the sample starts from")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = sys.stdout
    if args.load:
        model = load_charlm(args.load)
    else:
        text = None
        if args.text:
            with open(args.text, encoding="utf-8") as f:
                text = f.read()
        cfg = CharLMConfig(
            hidden=args.hidden,
            seq_len=args.seq_len,
            batch=args.batch,
            lr=args.lr,
            steps=args.steps,
            seed=args.seed,
            threaded=not args.sequential,
            progress=not args.no_progress and sys.stderr.isatty(),
        )
        model, result = train_charlm(cfg, text)
        out.write(
            f"{result.steps_done} steps in {result.seconds:.1f}s; loss {result.losses[0]:.3f} -> "
            f"{result.mean_loss(50):.3f} nats/char (mean of the last 50 steps)\n"
        )
        if args.out:
            model.save(args.out)
            model = load_charlm(args.out)
            out.write(f"saved to {args.out} and reloaded\n")
    if args.sample > 0:
        out.write(model.sample(args.sample, prime=args.prime, temperature=args.temperature, seed=args.seed) + "\n")
    return 0
