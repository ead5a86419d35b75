"""`trl-rewards merge` (a LoRA reward-model adapter and its head → a plain model) and `trl-rewards average` (WARM)."""

from __future__ import annotations

import argparse
import logging

from ..merge import average_reward_models, merge_adapter

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
    args = parser.parse_args(argv)
    distances = average_reward_models(args.models, args.output_dir, weights=args.weights)
    for path, distance in distances.items():
        logger.info("%s: relative distance to the average %.3f", path, distance)
    logger.info("averaged model written to %s", args.output_dir)
    return args.output_dir
