"""`trl-rewards make-pairs`: preference pairs from a policy's own samples, for the next round of DPO or BT training.

    trl-rewards make-pairs --model_name_or_path POLICY --dataset_name prompts.jsonl --output pairs.jsonl \\
        --num_generations 4 --reward_model runs/rm [--min_gap 0.5]          # best vs worst (self-rewarding)
    trl-rewards make-pairs ... --judge_model JUDGE [--judge_endpoint http://host:8000/v1]    # an LLM judge
    trl-rewards make-pairs ... --reward_config rewards.yaml                 # any reward or ensemble of ours
    trl-rewards make-pairs ... --mode spin --reference_column answer        # SPIN: reference vs own sample

Each prompt (the `prompt` column: text, or a list of messages rendered with the policy's chat template) is sampled
`num_generations` times with `generate(do_sample=True)` under one seed; the samples are scored with the reward
function in TRL's contract (the row's other columns passed as keyword arguments, as GRPO does, so a rule reward finds
its `answer`), and the selection rules of `data/pair_building.py` keep a pair or count why not. The output is JSON
lines in TRL's preference format (`prompt`, `chosen`, `rejected`, plus `score_chosen` / `score_rejected`), which
`trl-rewards train bt` and TRL's `DPOTrainer` read as they are. Every option, the output path and every prompt row
are checked before any model loads.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from ..data.pair_building import as_completion, best_worst_pairs, check_prompt_rows, spin_pairs
from ..trainers.base_config import check_choice
from .inputs import InputError, check_output_file, check_rows, read_split

logger = logging.getLogger(__name__)

MODES = ("best_worst", "spin")
JUDGE_MODES = ("expected", "parse")
_REWARD_SOURCES = ("reward_config", "reward_model", "judge_model")


@dataclass
class MakePairsArguments:
    """
    Options of `trl-rewards make-pairs`.

    Parameters:
        model_name_or_path (`str`): the policy that samples (folder or Hub id).
        gguf_file (`str`, *optional*): a GGUF file in `model_name_or_path` (dequantized to float32 at load).
        dataset_name (`str`): the prompts: a `.jsonl`/`.parquet` file, a saved dataset folder or a Hub name.
        dataset_config (`str`, *optional*), dataset_split (`str`, defaults to `"train"`): Hub configuration, split.
        prompt_column (`str`, *optional*, defaults to `"prompt"`): text or a list of `{role, content}` messages.
        max_samples (`int`, *optional*): use only the first N prompts.
        output (`str`): the `.jsonl` file of pairs.
        mode (`str`, *optional*, defaults to `"best_worst"`): `"best_worst"` (self-rewarding) or `"spin"`.
        reference_column (`str`, *optional*): `"spin"`: the column of reference answers (the `chosen` side).
        num_generations (`int`, *optional*): samples per prompt (default 4 for best_worst, at least 2; 1 for spin,
            where each sample gives one pair).
        min_gap (`float`, *optional*, defaults to `0.0`): smallest best - worst score gap kept (a tie is never kept).
        max_new_tokens (`int`), temperature (`float`), top_p (`float`): sampling.
        batch_size (`int`, *optional*, defaults to `8`): prompts per `generate` call.
        seed (`int`, *optional*, defaults to `0`): one seed gives one file (on one device, with one batch size).
        device (`str`, *optional*): default `"cuda"` when available, else `"cpu"`.
        reward_config (`str`, *optional*): a reward YAML (`build_reward`: a model, PRM, rule, or an ensemble).
        reward_model (`str`, *optional*): a reward model folder ([`RewardModelFunction`]).
        judge_model (`str`, *optional*): an instruct model as the judge ([`JudgeRewardFunction`]): a folder or Hub
            id, or the served model name with `judge_endpoint`.
        judge_gguf_file (`str`, *optional*): a GGUF file in `judge_model`'s folder.
        judge_endpoint (`str`, *optional*): an OpenAI-compatible server (e.g. `http://localhost:8000/v1`, vLLM).
        judge_mode (`str`, *optional*, defaults to `"expected"`): `"expected"` or `"parse"`.
        judge_template (`str`, *optional*): a text file holding the judge prompt with `{prompt}` and `{response}`.
    """

    model_name_or_path: str | None = field(default=None, metadata={"help": "The policy that samples (folder or id)."})
    gguf_file: str | None = field(default=None, metadata={"help": "GGUF file inside model_name_or_path."})
    dataset_name: str | None = field(
        default=None, metadata={"help": "Prompts: .jsonl/.parquet file, saved dataset folder or Hub name."}
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration."})
    dataset_split: str = field(default="train", metadata={"help": "Split of the prompts."})
    prompt_column: str = field(default="prompt", metadata={"help": "Column of prompts (text or messages)."})
    max_samples: int | None = field(default=None, metadata={"help": "Use only the first N prompts."})
    output: str | None = field(default=None, metadata={"help": "Output .jsonl of preference pairs."})
    mode: str = field(
        default="best_worst",
        metadata={"help": "best_worst (self-rewarding) or spin (reference vs own sample).", "choices": list(MODES)},
    )
    reference_column: str | None = field(default=None, metadata={"help": "spin: column of reference answers."})
    num_generations: int | None = field(
        default=None, metadata={"help": "Samples per prompt (default: 4 for best_worst, 1 for spin)."}
    )
    min_gap: float = field(default=0.0, metadata={"help": "Smallest best-minus-worst score gap kept."})
    max_new_tokens: int = field(default=128, metadata={"help": "Most new tokens per sample."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling threshold."})
    batch_size: int = field(default=8, metadata={"help": "Prompts per generate call."})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})
    device: str | None = field(default=None, metadata={"help": "Device (default: cuda when available, else cpu)."})
    reward_config: str | None = field(default=None, metadata={"help": "Reward YAML (a member or an ensemble)."})
    reward_model: str | None = field(default=None, metadata={"help": "Reward model folder."})
    judge_model: str | None = field(
        default=None, metadata={"help": "Judge: folder or Hub id, or the served model name with judge_endpoint."}
    )
    judge_gguf_file: str | None = field(default=None, metadata={"help": "GGUF file inside judge_model."})
    judge_endpoint: str | None = field(
        default=None, metadata={"help": "OpenAI-compatible server base URL, e.g. http://localhost:8000/v1."}
    )
    judge_mode: str = field(
        default="expected", metadata={"help": "Judge scoring: expected or parse.", "choices": list(JUDGE_MODES)}
    )
    judge_template: str | None = field(
        default=None, metadata={"help": "Text file with the judge prompt ({prompt} and {response})."}
    )

    def __post_init__(self):
        check_choice("mode", self.mode, MODES)
        check_choice("judge_mode", self.judge_mode, JUDGE_MODES)
        if self.num_generations is None:
            self.num_generations = 4 if self.mode == "best_worst" else 1
        if self.mode == "best_worst" and self.num_generations < 2:
            raise ValueError(f"num_generations must be >= 2 to pick a best and a worst, got {self.num_generations}")
        if self.num_generations < 1:
            raise ValueError(f"num_generations must be >= 1, got {self.num_generations}")
        if self.min_gap < 0:
            raise ValueError(f"min_gap must be >= 0, got {self.min_gap}")
        for name in ("max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {self.max_samples}")
        if self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"temperature must be > 0 and top_p in (0, 1], got {self.temperature}, {self.top_p}")
        given = [name for name in _REWARD_SOURCES if getattr(self, name)]
        if self.mode == "spin":
            if not self.reference_column:
                raise ValueError("mode spin needs --reference_column (the column of reference answers)")
            if given:
                raise ValueError(f"mode spin takes the reference as chosen and scores nothing; drop --{given[0]}")
        elif self.reference_column:
            raise ValueError("--reference_column is for --mode spin; best_worst scores the samples instead")
        if len(given) > 1:
            raise ValueError(f"give one reward source, got {', '.join('--' + n for n in given)}")
        judge_only = [n for n in ("judge_gguf_file", "judge_endpoint", "judge_template") if getattr(self, n)]
        if judge_only and not self.judge_model:
            raise ValueError(f"--{judge_only[0]} needs --judge_model")
        if self.judge_endpoint and self.judge_gguf_file:
            raise ValueError("--judge_gguf_file is for a local judge; a judge_endpoint serves its own weights")


def build_reward_source(args: MakePairsArguments):
    """The reward function named by the options (loaded now): a reward YAML, a reward model or a judge."""
    if args.reward_config:
        from ..rewards.from_config import build_reward

        return build_reward(args.reward_config)
    if args.reward_model:
        from ..rewards.model_rewards import RewardModelFunction

        return RewardModelFunction(args.reward_model, device=args.device)
    from ..inference.judge_scoring import DEFAULT_TEMPLATE
    from ..rewards.implicit_rewards import JudgeRewardFunction

    template = DEFAULT_TEMPLATE
    if args.judge_template:
        with open(args.judge_template) as f:
            template = f.read()
    if args.judge_endpoint:
        return JudgeRewardFunction(endpoint=args.judge_endpoint, model=args.judge_model, mode=args.judge_mode,
                                   template=template)  # fmt: skip
    from .demo_stages import load_policy

    judge, tokenizer = load_policy(_policy_namespace(args.judge_model, args.judge_gguf_file, args.seed))
    return JudgeRewardFunction(judge.to(_device(args)), tokenizer, template=template, mode=args.judge_mode)


def _device(args) -> str:
    import torch

    return args.device or ("cuda" if torch.cuda.is_available() else "cpu")


def _policy_namespace(path: str, gguf_file: str | None, seed: int) -> SimpleNamespace:
    return SimpleNamespace(tiny=False, policy=path, policy_gguf_file=gguf_file, seed=seed)


def prompt_ids(tokenizer, prompt: Any) -> list[int]:
    """Token ids a policy continues: a conversation through its chat template with the generation prompt, a text
    with the tokenizer's special tokens (its `<s>`)."""
    if isinstance(prompt, list):
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("conversational prompts need a tokenizer with a chat template")
        text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(prompt)["input_ids"]


def sample_completions(policy, tokenizer, prompts: list, num_generations: int, *, max_new_tokens: int = 128,
                       temperature: float = 1.0, top_p: float = 1.0, batch_size: int = 8,
                       ) -> tuple[list[list[str]], list[list[list[int]]]]:  # fmt: skip
    """
    `num_generations` sampled completions of each prompt: left-padded batches of `batch_size` prompts, plain
    temperature / nucleus sampling (no top-k cut-off); seed first with `transformers.set_seed`.

    Returns:
        `(texts, ids)`: per prompt, the decoded completions (special tokens dropped) and their token ids (up to, not
        including, the first eos).
    """
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config_eos = policy.generation_config.eos_token_id
    eos = {tokenizer.eos_token_id, *(config_eos if isinstance(config_eos, list) else [config_eos])} - {None}
    device = next(policy.parameters()).device
    policy.eval()
    texts, ids = [], []
    for start in range(0, len(prompts), batch_size):
        encoded = [prompt_ids(tokenizer, p) for p in prompts[start : start + batch_size]]
        width = max(len(e) for e in encoded)
        input_ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded], device=device)
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded], device=device)
        with torch.inference_mode():
            out = policy.generate(input_ids=input_ids, attention_mask=mask, do_sample=True, top_p=top_p, top_k=0,
                                  temperature=temperature, max_new_tokens=max_new_tokens,
                                  num_return_sequences=num_generations, pad_token_id=pad)  # fmt: skip
        for i in range(len(encoded)):
            group_texts, group_ids = [], []
            for row in out[i * num_generations : (i + 1) * num_generations, width:].tolist():
                cut = next((j for j, t in enumerate(row) if t in eos), len(row))
                group_ids.append(row[:cut])
                group_texts.append(tokenizer.decode(row[:cut], skip_special_tokens=True))
            texts.append(group_texts)
            ids.append(group_ids)
    return texts, ids


def score_groups(reward, rows: list[dict], prompt_column: str, samples: list[list[Any]], ids: list[list[list[int]]],
                 metrics: dict[str, float]) -> list[list[float | None]]:  # fmt: skip
    """The reward of every sample, called once as TRL does: prompts repeated per sample, each row's other columns
    repeated as keyword arguments; metrics the reward logs (e.g. a judge's unparsable count) are summed."""
    n = len(samples[0]) if samples else 0
    flat_prompts = [row[prompt_column] for row in rows for _ in range(n)]
    flat = [s for group in samples for s in group]
    columns = {k: [row[k] for row in rows for _ in range(n)] for k in rows[0] if k != prompt_column}

    def log_metric(name: str, value: float) -> None:
        metrics[name] = metrics.get(name, 0.0) + float(value)

    scores = reward(prompts=flat_prompts, completions=flat, completion_ids=[i for g in ids for i in g],
                    log_metric=log_metric, **columns)  # fmt: skip
    if len(scores) != len(flat):
        raise RuntimeError(f"the reward function returned {len(scores)} scores for {len(flat)} completions")
    return [list(scores[i * n : (i + 1) * n]) for i in range(len(rows))]


def run_make_pairs(args: MakePairsArguments, reward=None) -> dict[str, Any]:
    """`trl-rewards make-pairs` (see the module docstring); `reward` (any TRL reward function) replaces the reward
    options from Python. Returns the summary: counts, metrics and the output path."""
    from transformers import set_seed

    for name in ("model_name_or_path", "dataset_name", "output"):
        if not getattr(args, name):
            raise InputError(f"--{name} is required")
    if args.mode == "best_worst" and reward is None and not any(getattr(args, n) for n in _REWARD_SOURCES):
        raise InputError("mode best_worst needs a reward: --reward_model, --reward_config or --judge_model")
    if not args.output.endswith(".jsonl"):
        raise InputError(f"--output {args.output!r}: pairs are written as JSON lines; name the file *.jsonl")
    check_output_file(args.output)
    table = read_split(args.dataset_name, args.dataset_split, args.dataset_config, args.max_samples, "prompts")
    rows = table.to_list()
    check_rows(lambda _: check_prompt_rows(rows, args.prompt_column, args.reference_column), table, "prompts",
               args.dataset_name)  # fmt: skip
    if reward is None and args.mode == "best_worst":
        reward = build_reward_source(args)
    from .demo_stages import load_policy

    policy, tokenizer = load_policy(_policy_namespace(args.model_name_or_path, args.gguf_file, args.seed))
    policy.to(_device(args))
    set_seed(args.seed)
    prompts = [row[args.prompt_column] for row in rows]
    options = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": args.top_p}
    texts, scores, metrics = [], [], {}
    for start in range(0, len(rows), args.batch_size):  # sample then score each batch: a failure loses one batch
        chunk = slice(start, start + args.batch_size)
        batch_texts, ids = sample_completions(policy, tokenizer, prompts[chunk], args.num_generations,
                                              batch_size=args.batch_size, **options)  # fmt: skip
        texts += batch_texts
        if args.mode == "best_worst":
            samples = [[as_completion(p, t) for t in g] for p, g in zip(prompts[chunk], batch_texts, strict=True)]
            scores += score_groups(reward, rows[chunk], args.prompt_column, samples, ids, metrics)
        logger.info("make-pairs: %d/%d prompts sampled", min(start + args.batch_size, len(rows)), len(rows))
    if args.mode == "spin":
        pairs, counts = spin_pairs(prompts, [row[args.reference_column] for row in rows], texts)
    else:
        pairs, counts = best_worst_pairs(prompts, texts, scores, args.min_gap)
    summary = {"prompts": len(rows), "num_generations": args.num_generations, "counts": dict(counts),
               "metrics": metrics, "output": args.output}  # fmt: skip
    line = f"make-pairs ({args.mode}): {len(rows)} prompts x {args.num_generations} samples; {counts.summary()}"
    line += "".join(f"; {name} {value:g}" for name, value in metrics.items())
    print(line)
    if not pairs:
        raise ValueError(f"{line}: no pair to write (lower --min_gap, sample more, or check the reward)")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        for pair in pairs:
            f.write(json.dumps(pair, ensure_ascii=False) + "\n")
    print(f"wrote {len(pairs)} pairs to {args.output}")
    return summary


def make_pairs(argv: list[str]) -> dict[str, Any]:
    """`trl-rewards make-pairs`: options from flags and `--config` YAML."""
    from trl import TrlParser

    parser = TrlParser((MakePairsArguments,), prog="trl-rewards make-pairs", allow_abbrev=False)
    (args,) = parser.parse_args_and_config(argv)
    return run_make_pairs(args)
