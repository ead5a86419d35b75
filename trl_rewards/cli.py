"""`trl-rewards`: one entry point with sub-commands. Options come from the config dataclasses (TRL's `TrlParser`),
so `--config file.yaml` and command-line flags set the same fields.

    trl-rewards train bt --model_name_or_path M --dataset_name data.jsonl --output_dir out [--config x.yaml]
    trl-rewards train prm|orm (same options, with the config of that trainer)
    trl-rewards merge ADAPTER_DIR OUTPUT_DIR
    trl-rewards demo [--output_dir DIR] [--stages bt prm eval grpo] [--tiny] [--reward_base M] [--policy M] ...
    trl-rewards eval --model M --dataset pairs.jsonl --output_dir DIR [--subset_column subset] [--bootstrap N]
    trl-rewards score --model M --input rows.jsonl --output scored.jsonl
"""

from __future__ import annotations

import argparse
import logging
import sys

logger = logging.getLogger("trl_rewards")

USAGE = """usage: trl-rewards <command> [options]

commands:
  train bt     train a Bradley-Terry (pairwise) reward model
  train prm    train a process reward model (per-step labels; classifier or LM step-tag style)
  train orm    train an outcome reward model (one correctness label per solution)
  merge        merge a LoRA reward-model adapter and its head into a plain model
  demo         the whole pipeline on embedded data, offline, on CPU
  eval         evaluate a reward model on preference pairs: results.json, report.md, plots
  score        score (prompt, completion) rows of a .jsonl file

Run `trl-rewards <command> --help` for the options of a command."""


def _setup_logging() -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    logging.getLogger("trl_rewards").setLevel(logging.INFO)


def _load_splits(data_args, model_args=None):
    from .data.loading import has_split, load_table

    if data_args.dataset_name is None:
        raise SystemExit("error: --dataset_name is required (a local file, a saved dataset folder or a Hub name)")
    train = load_table(
        data_args.dataset_name, data_args.dataset_train_split, data_args.dataset_config, data_args.max_train_samples
    )
    eval_dataset = None
    if data_args.eval_dataset_name is not None:
        eval_dataset = load_table(
            data_args.eval_dataset_name,
            data_args.dataset_test_split,
            data_args.dataset_config,
            data_args.max_eval_samples,
        )
    elif has_split(data_args.dataset_name, data_args.dataset_test_split, data_args.dataset_config):
        eval_dataset = load_table(
            data_args.dataset_name, data_args.dataset_test_split, data_args.dataset_config, data_args.max_eval_samples
        )
    return train, eval_dataset


def train_bt(argv: list[str]) -> dict:
    """Parses `train bt` options (CLI and/or YAML), trains, saves the model and returns the final eval metrics."""
    from trl import ModelConfig, TrlParser

    from .configs import BradleyTerryConfig, DatasetArguments
    from .modeling import load_reward_model, reward_peft_config
    from .trainers.bt import BradleyTerryTrainer

    parser = TrlParser((DatasetArguments, BradleyTerryConfig, ModelConfig), prog="trl-rewards train bt")
    data_args, training_args, model_args = parser.parse_args_and_config(argv)
    if model_args.model_name_or_path is None:
        raise SystemExit("error: --model_name_or_path is required")
    train_dataset, eval_dataset = _load_splits(data_args)
    model, tokenizer = load_reward_model(model_args.model_name_or_path, model_args=model_args)
    model.train()
    trainer = BradleyTerryTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=reward_peft_config(model_args, head="sequence"),
    )
    trainer.train()
    results = trainer.evaluate() if eval_dataset is not None else {}
    trainer.save_model(training_args.output_dir)
    for name, report in trainer.length_reports.items():
        logger.info(report.message(name))
    logger.info("saved to %s; eval: %s", training_args.output_dir, results)
    return results


def _train_and_save(trainer, output_dir: str, has_eval: bool) -> dict:
    trainer.train()
    results = trainer.evaluate() if has_eval else {}
    trainer.save_model(output_dir)
    for name, report in trainer.length_reports.items():
        logger.info(report.message(name))
    logger.info("saved to %s; eval: %s", output_dir, results)
    return results


def train_prm(argv: list[str]) -> dict:
    """`train prm`: stepwise rows `{"prompt", "completions", "labels"}` -> a process reward model."""
    from trl import ModelConfig, TrlParser, get_peft_config

    from .configs import DatasetArguments, ProcessRewardConfig
    from .modeling import reward_peft_config
    from .process_scoring import load_process_reward_model
    from .trainers.process import ProcessRewardTrainer

    parser = TrlParser((DatasetArguments, ProcessRewardConfig, ModelConfig), prog="trl-rewards train prm")
    data_args, training_args, model_args = parser.parse_args_and_config(argv)
    if model_args.model_name_or_path is None:
        raise SystemExit("error: --model_name_or_path is required")
    train_dataset, eval_dataset = _load_splits(data_args)
    style = training_args.model_style
    model, tokenizer = load_process_reward_model(model_args.model_name_or_path, style, model_args=model_args)
    peft_config = reward_peft_config(model_args, head="token") if style == "classifier" else None
    if style == "lm" and model_args.use_peft:
        peft_config = get_peft_config(model_args)
        peft_config.task_type = "CAUSAL_LM"
    trainer = ProcessRewardTrainer(
        model=model.train(),
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    return _train_and_save(trainer, training_args.output_dir, eval_dataset is not None)


def train_orm(argv: list[str]) -> dict:
    """`train orm`: outcome rows `{"prompt", "completion", "label"}` -> an outcome reward model."""
    from trl import ModelConfig, TrlParser

    from .configs import DatasetArguments, OutcomeRewardConfig
    from .modeling import load_reward_model, reward_peft_config
    from .trainers.outcome import OutcomeRewardTrainer

    parser = TrlParser((DatasetArguments, OutcomeRewardConfig, ModelConfig), prog="trl-rewards train orm")
    data_args, training_args, model_args = parser.parse_args_and_config(argv)
    if model_args.model_name_or_path is None:
        raise SystemExit("error: --model_name_or_path is required")
    train_dataset, eval_dataset = _load_splits(data_args)
    model, tokenizer = load_reward_model(model_args.model_name_or_path, model_args=model_args)
    trainer = OutcomeRewardTrainer(
        model=model.train(),
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=reward_peft_config(model_args, head="sequence"),
    )
    return _train_and_save(trainer, training_args.output_dir, eval_dataset is not None)


def merge(argv: list[str]) -> str:
    from .modeling import merge_adapter

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


def evaluate(argv: list[str]) -> dict:
    """`trl-rewards eval`: categorized evaluation of a reward model, written as results.json, report.md and PNGs."""
    from trl import TrlParser

    from .configs import EvalArguments, ScorerArguments
    from .evaluation import run_eval

    parser = TrlParser((EvalArguments, ScorerArguments), prog="trl-rewards eval")
    eval_args, scorer_args = parser.parse_args_and_config(argv)
    return run_eval(eval_args, scorer_args)


def score(argv: list[str]) -> str:
    """`trl-rewards score`: adds a `score` to every (prompt, completion) row of a file."""
    from trl import TrlParser

    from .configs import ScoreArguments, ScorerArguments
    from .evaluation import score_file

    parser = TrlParser((ScoreArguments, ScorerArguments), prog="trl-rewards score")
    score_args, scorer_args = parser.parse_args_and_config(argv)
    return score_file(score_args, scorer_args)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    _setup_logging()
    command, rest = argv[0], argv[1:]
    if command == "train":
        kinds = {"bt": train_bt, "prm": train_prm, "orm": train_orm}
        if not rest or rest[0] not in kinds:
            print(f"usage: trl-rewards train {{{','.join(kinds)}}} [options]", file=sys.stderr)
            return 2
        kinds[rest[0]](rest[1:])
    elif command == "merge":
        merge(rest)
    elif command == "eval":
        evaluate(rest)
    elif command == "score":
        score(rest)
    elif command == "demo":
        from .demo import main as demo_main

        demo_main(rest)
    else:
        print(f"unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
