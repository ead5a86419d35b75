"""`trl-rewards`: one entry point with sub-commands. Options come from the config dataclasses (TRL's `TrlParser`),
so `--config file.yaml` and command-line flags set the same fields.

    trl-rewards train bt --model_name_or_path M --dataset_name data.jsonl --output_dir out [--config x.yaml]
    trl-rewards train prm|orm|attr|pairwise (same options, with the config of that trainer)
    trl-rewards merge ADAPTER_DIR OUTPUT_DIR
    trl-rewards demo [--output_dir DIR] [--stages bt prm eval grpo] [--tiny] [--reward_base M] [--policy M] ...
    trl-rewards eval --model M --dataset pairs.jsonl --output_dir DIR [--subset_column subset] [--bootstrap N]
    trl-rewards score --model M --input rows.jsonl --output scored.jsonl
    trl-rewards make-pairs --model_name_or_path P --dataset_name prompts.jsonl --output pairs.jsonl --reward_model M
    trl-rewards configs [--output_dir deepspeed_configs]
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

logger = logging.getLogger("trl_rewards")

USAGE = """usage: trl-rewards <command> [options]

commands:
  train bt     train a Bradley-Terry (pairwise) reward model
  train prm    train a process reward model (per-step labels; classifier or LM step-tag style)
  train orm    train an outcome reward model (one correctness label per solution)
  train attr   train a multi-attribute regression reward model (HelpSteer2-style ratings, one column each)
  train pairwise  train a pairwise preference model: reads both responses, outputs P(A beats B) (pair-PM)
  merge        merge a LoRA reward-model adapter and its head into a plain model
  average      weight-average reward models fine-tuned from one initialization (WARM)
  demo         the whole pipeline on embedded data, offline, on CPU
  eval         evaluate a reward model on preference pairs: results.json, report.md, plots
  eval-steps   evaluate a process reward model on ProcessBench or PRMBench rows: results.json, report.md
  score        score (prompt, completion) rows of a .jsonl file
  make-pairs   preference pairs from a policy's samples: best vs worst by a reward or judge, or SPIN
  serve        serve reward models, PRMs or an ensemble over HTTP (Ray Serve; ours, vLLM and OpenRLHF protocols)
  configs      write the packaged DeepSpeed/accelerate configs into ./deepspeed_configs

Run `trl-rewards <command> --help` for the options of a command. Errors print one line; set TRL_REWARDS_DEBUG=1
for the full traceback."""


def _setup_logging() -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    logging.getLogger("trl_rewards").setLevel(logging.INFO)
    # DeepSpeed warns at import, on every machine without CUDA, that it falls back to the CPU: on CPU that is what the
    # user asked for, and on a GPU machine torch (and so every command here) would not see the GPU either.
    logging.getLogger("DeepSpeed").addFilter(lambda record: "Setting accelerator to CPU" not in record.getMessage())


# command (or "train <kind>") -> (module of this package, function taking the remaining arguments); a command's module
# is imported only when it runs, so `trl-rewards --help` and light commands never load the Trainer stack.
COMMANDS = {
    "train bt": ("train", "train_bt"),
    "train prm": ("train", "train_prm"),
    "train orm": ("train", "train_orm"),
    "train attr": ("train", "train_attr"),
    "train pairwise": ("train", "train_pairwise"),
    "merge": ("merge", "merge"),
    "average": ("merge", "average"),
    "eval": ("eval", "evaluate"),
    "eval-steps": ("eval_steps", "eval_steps"),
    "score": ("eval", "score"),
    "make-pairs": ("make_pairs", "make_pairs"),
    "serve": ("serve", "main"),
    "configs": ("configs", "main"),
    "demo": ("demo", "main"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    _setup_logging()
    command, rest = argv[0], argv[1:]
    if command == "train":
        kinds = [name.split()[1] for name in COMMANDS if name.startswith("train ")]
        if not rest or rest[0] not in kinds:
            print(f"usage: trl-rewards train {{{','.join(kinds)}}} [options]", file=sys.stderr)
            return 2
        command, rest = f"train {rest[0]}", rest[1:]
    if command not in COMMANDS:
        print(f"unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    module, function = COMMANDS[command]
    getattr(importlib.import_module(f".{module}", __package__), function)(rest)
    return 0


DEBUG_VARIABLE = "TRL_REWARDS_DEBUG"


def console(argv: list[str] | None = None) -> int:
    """
    The `trl-rewards` entry point: [`main`], with any error printed as one line, `trl-rewards: error: ...`, naming
    what is at fault (file, row, field or option), and exit status 1 (2 for usage errors, as argparse does). Set
    `TRL_REWARDS_DEBUG=1` for the full traceback. `main` itself raises, for use from Python.
    """
    try:
        return main(argv)
    except KeyboardInterrupt:
        print("trl-rewards: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if os.environ.get(DEBUG_VARIABLE, "").lower() not in ("", "0", "false"):
            raise
        message = " ".join(str(error).split()) or "(no message)"
        if not isinstance(error, ValueError | FileNotFoundError | FileExistsError | TypeError):
            message = f"{type(error).__name__}: {message}"  # unexpected: say what kind of failure it was
        print(f"trl-rewards: error: {message} (set {DEBUG_VARIABLE}=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(console())
