"""`trl-rewards merge ADAPTER_DIR OUTPUT_DIR`: a LoRA reward-model adapter and its head → a plain model."""

from __future__ import annotations

import argparse
import logging

from ..merge import merge_adapter

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
