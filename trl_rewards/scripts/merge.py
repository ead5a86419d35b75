"""`trl-rewards merge` (a LoRA reward-model adapter and its head → a plain model) and `trl-rewards average` (WARM)."""

from __future__ import annotations

import argparse
import logging

from ..data.preference import validate_preference_rows
from ..evaluation.interpolation import DEFAULT_ALPHAS, format_interpolation, interpolation_check
from ..merge import average_reward_models, merge_adapter
from .inputs import check_rows, read_split

logger = logging.getLogger(__name__)


def merge(argv: list[str]) -> str:
    parser = argparse.ArgumentParser(
        prog="trl-rewards merge",
        description="Merge a LoRA reward-model adapter (and its trained head) into a plain model. A process reward "
        "model's adapter (with process_reward.json) is recognised: its own head and step layout are kept.",
    )
    parser.add_argument("adapter_dir")
    parser.add_argument("output_dir")
    parser.add_argument(
        "--head", choices=["sequence", "token"], default="sequence", help="Head of a non-PRM adapter's base model."
    )
    parser.add_argument("--num_labels", type=int, default=1, help="Outputs of that head (1 for a scalar reward).")
    args = parser.parse_args(argv)
    out = merge_adapter(args.adapter_dir, args.output_dir, head=args.head, num_labels=args.num_labels)
    logger.info("merged model written to %s", out)
    return out


def average(argv: list[str]) -> str:
    parser = argparse.ArgumentParser(
        prog="trl-rewards average",
        description="Weight-average reward models fine-tuned from one initialization (WARM) into one plain model.",
        allow_abbrev=False,
    )
    parser.add_argument("output_dir")
    parser.add_argument("models", nargs="+", help="Two or more reward-model folders or LoRA adapters on one base.")
    parser.add_argument("--weights", type=float, nargs="+", help="One weight per model (default: equal).")
    parser.add_argument(
        "--interpolation_dev",
        metavar="FILE",
        help="Preference pairs (chosen/rejected, optional prompt): after averaging, print the dev BT loss and accuracy"
        " along the line (1-α)θ_a + αθ_b between every two members (a loss barrier in the middle: do not average).",
    )
    parser.add_argument(
        "--interpolation_alphas", type=float, nargs="+", default=list(DEFAULT_ALPHAS), help="Points α of the path."
    )
    parser.add_argument("--max_length", type=int, help="Truncation when scoring --interpolation_dev.")
    args = parser.parse_args(argv)
    dev = None
    if args.interpolation_dev is not None:  # a bad file fails before any model loads
        dev = read_split(args.interpolation_dev, "train", None, None, "--interpolation_dev")
        check_rows(validate_preference_rows, dev, "--interpolation_dev", args.interpolation_dev)
    distances = average_reward_models(args.models, args.output_dir, weights=args.weights)
    for path, distance in distances.items():
        logger.info("%s: relative distance to the average %.3f", path, distance)
    logger.info("averaged model written to %s", args.output_dir)
    for i, model_a in enumerate(args.models if dev is not None else ()):
        for model_b in args.models[i + 1 :]:
            rows = interpolation_check(model_a, model_b, dev, args.interpolation_alphas, max_length=args.max_length)
            print(f"\nθ(α) = (1-α) {model_a} + α {model_b}, on {args.interpolation_dev}\n")
            print(format_interpolation(rows))
    return args.output_dir
