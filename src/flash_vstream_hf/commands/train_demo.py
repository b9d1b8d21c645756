"""`flash-vstream train-demo`: train the built-in demo model from scratch on synthetic streams (CPU, one core).

Reproducible from `--seed`: streams, questions, initialisation and k-means are all seeded, and torch runs on one
thread. The defaults are the recipe of the shipped checkpoint (`flash_vstream_hf/demo_model/`, whose
`training.json` records the command and every setting): `flash-vstream train-demo` alone retrains it. See
`flash_vstream_hf/synthetic/training.py` for the method. A progress bar shows the running loss and answer
accuracy per family; `--log` appends one JSON line per `--log-every` steps.
"""

from __future__ import annotations

import argparse

from ..synthetic.training import TrainSettings
from .arguments import NON_NEGATIVE, POSITIVE, SECONDS, SEED, SHARE, WEIGHT, real, text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = TrainSettings()
    parser.add_argument("--output-dir", default="flash-vstream-demo-model", type=text("output folder"), help="where the checkpoint is saved")
    parser.add_argument("--seed", type=SEED, default=defaults.seed)
    parser.add_argument("--steps", type=POSITIVE, default=defaults.steps)
    parser.add_argument("--streams-per-step", type=POSITIVE, default=defaults.streams_per_step)
    parser.add_argument("--learning-rate", type=real(0.0, low_inclusive=False), default=defaults.learning_rate)
    parser.add_argument(
        "--perception-steps", type=NON_NEGATIVE, default=defaults.perception_steps, help="grounding-only steps first"
    )
    parser.add_argument(
        "--grounding-weight", type=WEIGHT, default=defaults.grounding_weight, help="grounding loss weight after them"
    )
    parser.add_argument(
        "--presence-weight", type=WEIGHT, default=defaults.presence_weight, help="presence-probe loss weight"
    )
    parser.add_argument(
        "--family-weights",
        type=family_weights,
        default=defaults.family_weights,
        help="question families after the first stage, e.g. now=0.2,recent=0.2,long-range=0.6",
    )
    parser.add_argument(
        "--prefix-share",
        type=SHARE,
        default=defaults.prefix_share,
        help="share of steps whose clip follows a long sped-up prefix (a long stream's memory)",
    )
    parser.add_argument(
        "--hard-negative-share",
        type=SHARE,
        default=defaults.hard_negative_share,
        help="share of 'is there a X shape now' whose 'no' colour was on screen before",
    )
    parser.add_argument("--first-stage-steps", type=NON_NEGATIVE, default=defaults.first_stage_steps)
    parser.add_argument("--warmup-steps", type=NON_NEGATIVE, default=defaults.warmup_steps)
    parser.add_argument("--stop-after", type=POSITIVE, default=None, help="stop after this many of the planned steps")
    parser.add_argument("--init-from", default=None, type=text("checkpoint folder"), help="continue from a checkpoint train-demo saved")
    parser.add_argument("--step-offset", type=NON_NEGATIVE, default=0, help="steps done before --init-from (new streams)")
    parser.add_argument("--min-length", type=POSITIVE, default=defaults.min_length, help="frames per training stream")
    parser.add_argument("--max-length", type=POSITIVE, default=defaults.max_length)
    parser.add_argument("--max-minutes", type=SECONDS, default=None, help="stop (and save) after this wall time")
    parser.add_argument("--log", default=None, type=text("log path"), help="append the loss/accuracy log (JSON lines) to this file")
    parser.add_argument("--log-every", type=POSITIVE, default=defaults.log_every)
    parser.add_argument("--threads", type=POSITIVE, default=1, help="torch threads (default 1: the step is tiny)")


def family_weights(text: str) -> dict[str, float]:
    """`"now=0.2,recent=0.2,long-range=0.6"` -> `{"now": 0.2, ...}` (families of `questions.FAMILIES`)."""
    from ..synthetic.questions import FAMILIES

    weights = {}
    for item in text.split(","):
        family, _, weight = item.partition("=")
        if family.strip() not in FAMILIES:
            raise argparse.ArgumentTypeError(f"unknown question family {family.strip()!r}; expected one of {FAMILIES}")
        try:
            weights[family.strip()] = float(weight)
        except ValueError:
            raise argparse.ArgumentTypeError(f"family weight {item!r} is not family=number") from None
    if not any(value > 0 for value in weights.values()):
        raise argparse.ArgumentTypeError(f"family weights {text!r}: at least one must be positive")
    return weights


def check_arguments(args: argparse.Namespace) -> None:
    """What argparse types cannot check alone."""
    if args.min_length > args.max_length:
        raise ValueError(f"--min-length {args.min_length} is above --max-length {args.max_length}")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..synthetic.training import train

    torch.set_num_threads(args.threads)
    train(settings_from_args(args), args.output_dir, args.log)
    print(f"saved to {args.output_dir}")
    return 0


def settings_from_args(args: argparse.Namespace) -> TrainSettings:
    """The `TrainSettings` of a parsed `train-demo` command line (every setting without a flag at its default)."""
    return TrainSettings(
        seed=args.seed,
        steps=args.steps,
        streams_per_step=args.streams_per_step,
        learning_rate=args.learning_rate,
        perception_steps=args.perception_steps,
        grounding_weight=args.grounding_weight,
        presence_weight=args.presence_weight,
        family_weights=args.family_weights,
        prefix_share=args.prefix_share,
        hard_negative_share=args.hard_negative_share,
        first_stage_steps=args.first_stage_steps,
        warmup_steps=args.warmup_steps,
        stop_after=args.stop_after,
        init_from=args.init_from,
        step_offset=args.step_offset,
        min_length=args.min_length,
        max_length=args.max_length,
        max_minutes=args.max_minutes,
        log_every=args.log_every,
    )
