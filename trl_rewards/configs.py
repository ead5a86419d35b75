"""Trainer configurations: one dataclass per trainer, subclassing TRL's, shared by Python, the CLI and YAML files.

Every field carries `metadata={"help": ...}` (and `"choices"` for enumerations) and is validated in `__post_init__`,
so a wrong value fails before any model is loaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from trl import RewardConfig
from trl.trainer.base_config import _BaseConfig

from .data.preference import TOO_LONG_POLICIES
from .metrics import TIE_POLICIES


def _resolve_bf16(config) -> None:
    # TRL defaults bf16 to True everywhere; on a CPU or a pre-Ampere GPU that means slow or unsupported autocast.
    # Default to bf16 only where the hardware runs it natively; an explicit value is always kept.
    if config.bf16 is None and not config.fp16:
        config.bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def _resolve_checkpointing_alias(config) -> None:
    # TRL sets `gradient_checkpointing` (default True); transformers>=5.2x renamed it `activation_checkpointing` and
    # warns (FutureWarning) whenever only the old name is set. Carry the value over to the new name instead.
    for old, new in (
        ("gradient_checkpointing", "activation_checkpointing"),
        ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs"),
    ):
        if hasattr(config, new) and getattr(config, new) is None and getattr(config, old) is not None:
            setattr(config, new, getattr(config, old))


def _resolve_cpu_deepspeed(config) -> None:
    # DeepSpeed without a GPU (a CPU-only box, CI) only initialises its process group through accelerate's CPU path;
    # otherwise accelerate counts one process while DeepSpeed counts all of them, and batch sizes disagree.
    uses_deepspeed = config.deepspeed or os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    if uses_deepspeed and not torch.cuda.is_available():
        config.use_cpu = True


def _resolve_host_defaults(config) -> None:
    """Defaults that depend on the host (bf16, CPU DeepSpeed) and TRL/transformers renames; call first in
    `__post_init__` of every config."""
    _resolve_bf16(config)
    _resolve_checkpointing_alias(config)
    _resolve_cpu_deepspeed(config)


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


@dataclass
class _TrainingFields:
    """
    Settings shared by every trainer's config (one definition each): the length limit, what happens to longer rows,
    and a bf16 default that follows the hardware. Listed first among a config's bases, so these fields replace TRL's
    of the same name.
    """

    max_length: int | None = field(
        default=1024,
        metadata={
            "help": "Longest tokenized row (prompt + completion, or prompt + steps) kept as is; longer rows are "
            "handled as `too_long` says, and always reported."
        },
    )
    too_long: str = field(
        default="truncate",
        metadata={
            "help": "Rows longer than max_length: truncate (pairs and outcomes keep the start's special tokens and "
            "the end; stepwise rows are cut from the left, never a labelled token), drop, or error.",
            "choices": list(TOO_LONG_POLICIES),
        },
    )
    bf16: bool | None = field(
        default=None,
        metadata={
            "help": "Use bf16 mixed precision. If not set: on when the GPU supports bf16, off on CPU (TRL turns it on "
            "everywhere)."
        },
    )

    def _check_training_fields(self) -> None:
        _check_choice("too_long", self.too_long, TOO_LONG_POLICIES)
        if self.max_length is not None and self.max_length < 2:
            raise ValueError(f"max_length must be >= 2 or None, got {self.max_length}")


@dataclass
class _CalibrationField:
    calibration_bins: int = field(
        default=10, metadata={"help": "Number of confidence bins of the logged expected calibration error."}
    )

    def _check_calibration_field(self) -> None:
        if self.calibration_bins < 1:
            raise ValueError(f"calibration_bins must be >= 1, got {self.calibration_bins}")


@dataclass
class BradleyTerryConfig(_TrainingFields, _CalibrationField, RewardConfig):
    """
    Configuration for [`BradleyTerryTrainer`]: TRL's [`~trl.RewardConfig`] plus the options below.

    Parameters:
        max_length (`int` or `None`, *optional*, defaults to `1024`):
            Longest tokenized sequence (prompt + completion) kept as is. What happens to longer pairs is set by
            `too_long`, and always reported.
        too_long (`str`, *optional*, defaults to `"truncate"`):
            `"truncate"` keeps the leading special tokens and the end of the sequence, `"drop"` removes the pair,
            `"error"` stops with the first offending row.
        label_smoothing (`float`, *optional*, defaults to `0.0`):
            `ε` in `[0, 0.5)`: the target probability that `chosen` is better becomes `p (1 - ε) + (1 - p) ε`
            (with `p` the row's soft `label`, or 1).
        tie_policy (`str`, *optional*, defaults to `"loss"`):
            How a pair with equal rewards counts in the logged accuracy: `"loss"` (a tie is not a win), `"half"`
            or `"exclude"`.
        calibration_bins (`int`, *optional*, defaults to `10`):
            Number of confidence bins of the logged expected calibration error.
        store_reward_stats (`bool`, *optional*, defaults to `True`):
            After training, score the eval set (the train set if there is none) and store the reward mean and std
            in the model config as `reward_mean` / `reward_std`, for downstream normalization.
    """

    label_smoothing: float = field(
        default=0.0,
        metadata={"help": "Label smoothing ε in [0, 0.5): target p becomes p(1-ε) + (1-p)ε."},
    )
    tie_policy: str = field(
        default="loss",
        metadata={"help": "How equal rewards count in the logged accuracy.", "choices": list(TIE_POLICIES)},
    )
    store_reward_stats: bool = field(
        default=True,
        metadata={
            "help": "After training, store the reward mean/std measured on the eval set (train set if none) in the "
            "model config as `reward_mean`/`reward_std`."
        },
    )

    def __post_init__(self):
        _resolve_host_defaults(self)
        self._check_training_fields()
        self._check_calibration_field()
        _check_choice("tie_policy", self.tie_policy, TIE_POLICIES)
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must lie in [0, 0.5), got {self.label_smoothing}")
        if self.center_rewards_coefficient is not None and self.center_rewards_coefficient < 0:
            raise ValueError(f"center_rewards_coefficient must be >= 0, got {self.center_rewards_coefficient}")
        super().__post_init__()


@dataclass
class DatasetArguments:
    """
    Where the training data comes from; shared by every `trl-rewards train` sub-command.

    Parameters:
        dataset_name (`str`):
            A local file (`.jsonl`, `.json`, `.jsonl.gz`, `.parquet`, `.csv`), a folder saved with
            `Dataset.save_to_disk`, or a Hub dataset name.
        dataset_config (`str`, *optional*): Hub dataset configuration.
        dataset_train_split (`str`, *optional*, defaults to `"train"`): split used for training.
        eval_dataset_name (`str`, *optional*): separate file/folder/Hub name for evaluation; defaults to
            `dataset_name`'s `dataset_test_split` if it has one.
        dataset_test_split (`str`, *optional*, defaults to `"test"`): split used for evaluation.
        max_train_samples (`int`, *optional*): keep only the first N training rows.
        max_eval_samples (`int`, *optional*): keep only the first N evaluation rows.
    """

    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Local file (.jsonl/.json/.jsonl.gz/.parquet/.csv), saved dataset folder, or Hub name."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split used for training."})
    eval_dataset_name: str | None = field(
        default=None, metadata={"help": "Separate evaluation file/folder/Hub name (default: the test split)."}
    )
    dataset_test_split: str = field(default="test", metadata={"help": "Split used for evaluation."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep only the first N evaluation rows."})

    def __post_init__(self):
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")


PRM_MODEL_STYLES = ("classifier", "lm")
ORM_SUPERVISIONS = ("final_token", "all_tokens")
_LM_STYLE_DEFAULTS = {"step_tag": "<|prm_label|>", "good_token": "+", "bad_token": "-"}


@dataclass
class ProcessRewardConfig(_TrainingFields, _BaseConfig):
    """
    Configuration for [`ProcessRewardTrainer`]: TRL's base training arguments plus the options below. (TRL removed
    its `PRMConfig` in 1.13; the fields keep its names where they exist.)

    Parameters:
        model_style (`str`, *optional*, defaults to `"classifier"`):
            `"classifier"`: a token-classification model (2 labels, 1 = good), read at the last token of the separator
            that ends each step. `"lm"`: a causal LM, read at a step tag appended to each step, where the logits of
            `good_token` and `bad_token` give P(step correct).
        step_separator (`str`, *optional*, defaults to `"\\n"`):
            Text appended after each step (after its tag in `"lm"` style). In `"classifier"` style it must tokenize to
            at least one token (a BERT tokenizer drops `"\\n"`: use its `[SEP]`); in `"lm"` style it may be `""`.
        step_tag (`str`, *optional*):
            `"lm"` style only, default `"<|prm_label|>"`: the token appended to each step, added to the tokenizer (and
            the embeddings resized) when missing.
        good_token (`str`, *optional*):
            `"lm"` style only, default `"+"`: the single token whose logit at a tag means "correct".
        bad_token (`str`, *optional*):
            `"lm"` style only, default `"-"`: the single token whose logit at a tag means "wrong".
        train_on_last_step_only (`bool`, *optional*, defaults to `False`):
            Label only the last step of each training row (the other steps stay in the input, unlabelled).
        eval_on_last_step_only (`bool`, *optional*, defaults to `False`):
            The same for evaluation rows, e.g. for PRM800K stepwise-critic rows whose earlier steps are all good by
            construction.
        max_length (`int` or `None`, *optional*, defaults to `1024`):
            Longest tokenized row kept as is; longer rows are handled as `too_long` says, and always reported.
        too_long (`str`, *optional*, defaults to `"truncate"`):
            `"truncate"` removes tokens from the left, after the leading special tokens: the prompt first, then the
            oldest steps, never a token that carries a label (a row that cannot fit so is dropped and counted);
            `"drop"` removes the row, `"error"` stops at the first one.
        step_threshold (`float`, *optional*, defaults to `0.5`):
            A step is predicted bad when its P(correct) is below this value (logged accuracy, F1, first error).
        pad_to_multiple_of (`int`, *optional*):
            Pad each batch to a multiple of this length.
        dataset_num_proc (`int`, *optional*):
            Processes used to tokenize the datasets.
        disable_dropout (`bool`, *optional*, defaults to `True`):
            Whether to disable dropout in the model.
    """

    model_style: str = field(
        default="classifier",
        metadata={
            "help": "classifier: token-classification head read at each step's separator; lm: causal LM read at a "
            "step tag through the logits of good_token and bad_token.",
            "choices": list(PRM_MODEL_STYLES),
        },
    )
    step_separator: str = field(
        default="\n",
        metadata={"help": "Text appended after each step; in classifier style it must tokenize to >= 1 token."},
    )
    step_tag: str | None = field(
        default=None,
        metadata={"help": "lm style only (default <|prm_label|>): token appended to each step, added if missing."},
    )
    good_token: str | None = field(
        default=None, metadata={"help": "lm style only (default +): single token whose logit means 'correct'."}
    )
    bad_token: str | None = field(
        default=None, metadata={"help": "lm style only (default -): single token whose logit means 'wrong'."}
    )
    train_on_last_step_only: bool = field(
        default=False, metadata={"help": "Label only the last step of each training row."}
    )
    eval_on_last_step_only: bool = field(
        default=False, metadata={"help": "Label only the last step of each evaluation row."}
    )
    step_threshold: float = field(
        default=0.5, metadata={"help": "A step is predicted bad when P(correct) is below this value."}
    )
    pad_to_multiple_of: int | None = field(
        default=None, metadata={"help": "Pad each batch to a multiple of this length."}
    )
    dataset_num_proc: int | None = field(
        default=None, metadata={"help": "Number of processes used to tokenize the datasets."}
    )
    disable_dropout: bool = field(default=True, metadata={"help": "Whether to disable dropout in the model."})
    learning_rate: float = field(default=1e-5, metadata={"help": "The initial learning rate for AdamW."})

    def __post_init__(self):
        _resolve_host_defaults(self)
        self._check_training_fields()
        _check_choice("model_style", self.model_style, PRM_MODEL_STYLES)
        for name, default in _LM_STYLE_DEFAULTS.items():
            value = getattr(self, name)
            if self.model_style == "classifier" and value is not None:
                raise ValueError(f"{name} is used only with model_style='lm', got {name}={value!r} with 'classifier'")
            if self.model_style == "lm":
                if value is None:
                    setattr(self, name, default)
                elif not isinstance(value, str) or not value.strip():
                    raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        if self.model_style == "lm" and self.good_token == self.bad_token:
            raise ValueError(f"good_token and bad_token must differ, both are {self.good_token!r}")
        if self.model_style == "lm" and self.step_tag in (self.good_token, self.bad_token):
            raise ValueError(f"step_tag {self.step_tag!r} must differ from good_token and bad_token")
        if not isinstance(self.step_separator, str):
            raise ValueError(f"step_separator must be a string, got {type(self.step_separator).__name__}")
        if self.model_style == "classifier" and not self.step_separator:
            raise ValueError("step_separator must not be empty with model_style='classifier': the label sits on it")
        if not 0.0 < self.step_threshold < 1.0:
            raise ValueError(f"step_threshold must lie in (0, 1), got {self.step_threshold}")
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of must be >= 1 or None, got {self.pad_to_multiple_of}")
        super().__post_init__()


@dataclass
class OutcomeRewardConfig(_TrainingFields, _CalibrationField, RewardConfig):
    """
    Configuration for [`OutcomeRewardTrainer`]: TRL's [`~trl.RewardConfig`] plus the options below.

    Parameters:
        supervision (`str`, *optional*, defaults to `"final_token"`):
            `"final_token"`: binary cross-entropy on the score the stock sequence-classification head reads (last
            token of a decoder, `[CLS]` of an encoder). `"all_tokens"`: the same loss on the score head applied to
            every completion token and the read-out token, averaged per sequence. Inference always reads the final
            token.
        max_length (`int` or `None`, *optional*, defaults to `1024`):
            Longest tokenized sequence (prompt + completion) kept as is; longer ones are handled as `too_long` says.
        too_long (`str`, *optional*, defaults to `"truncate"`):
            `"truncate"` keeps the leading special tokens and the end, `"drop"` removes the row, `"error"` stops.
        calibration_bins (`int`, *optional*, defaults to `10`):
            Number of confidence bins of the logged expected calibration error of P(correct) = σ(score).
    """

    supervision: str = field(
        default="final_token",
        metadata={
            "help": "final_token: BCE on the stock read-out score; all_tokens: BCE on the score of every completion "
            "token (and the read-out token), averaged per sequence. Inference always reads the final token.",
            "choices": list(ORM_SUPERVISIONS),
        },
    )

    def __post_init__(self):
        _resolve_host_defaults(self)
        self._check_training_fields()
        self._check_calibration_field()
        _check_choice("supervision", self.supervision, ORM_SUPERVISIONS)
        if self.center_rewards_coefficient is not None:
            raise ValueError(
                "center_rewards_coefficient is not used by OutcomeRewardTrainer: the BCE loss already fixes the "
                "score's offset (σ(score) is P(correct)); leave it unset"
            )
        if self.chat_template_path is not None:
            raise ValueError("chat_template_path is not used by OutcomeRewardTrainer: outcome rows are plain text")
        super().__post_init__()


SCORER_DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class ScorerArguments:
    """
    How `trl-rewards eval` and `trl-rewards score` load and run a reward model ([`RewardScorer`]).

    Parameters:
        batch_size (`int`, *optional*, defaults to `32`): most sequences per forward pass.
        max_tokens_per_batch (`int`, *optional*): most padded tokens per forward pass.
        max_length (`int`, *optional*): longer sequences are truncated as in training (counted in the report);
            default: the tokenizer's `model_max_length` when it sets one, else no truncation.
        normalize (`bool`, *optional*, defaults to `False`): z-score with the `reward_mean`/`reward_std` stored in the
            model config by our trainers.
        dtype (`str`, *optional*): weights dtype; default: transformers' default.
        device (`str`, *optional*): default: `"cuda"` when available, else `"cpu"`.
        cache_path (`str`, *optional*): sqlite score cache ([`ScoreCache`]); only texts not scored before by the
            same weights and settings are computed.
    """

    batch_size: int = field(default=32, metadata={"help": "Most sequences per forward pass."})
    max_tokens_per_batch: int | None = field(default=None, metadata={"help": "Most padded tokens per forward pass."})
    max_length: int | None = field(
        default=None,
        metadata={
            "help": "Truncate longer sequences as in training (default: the tokenizer's model_max_length when set)."
        },
    )
    normalize: bool = field(
        default=False, metadata={"help": "Z-score with the reward_mean/reward_std stored in the model config."}
    )
    dtype: str | None = field(
        default=None, metadata={"help": "Weights dtype (default: transformers' default).", "choices": SCORER_DTYPES}
    )
    device: str | None = field(default=None, metadata={"help": "Device (default: cuda when available, else cpu)."})
    cache_path: str | None = field(
        default=None, metadata={"help": "Sqlite score cache: reuse scores of texts already scored by these weights."}
    )

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        for name in ("max_tokens_per_batch", "max_length"):
            value = getattr(self, name)
            if value is not None and value < 2:
                raise ValueError(f"{name} must be >= 2 or unset, got {value}")
        if self.dtype is not None:
            _check_choice("dtype", self.dtype, SCORER_DTYPES)


@dataclass
class EvalArguments:
    """
    Options of `trl-rewards eval` (see `trl_rewards.evaluation` for the aggregation scheme).

    Parameters:
        model (`list[str]`): reward model folder or Hub id (one; several, an ensemble, are not wired to the CLI yet).
        dataset (`str`): preference data: a local file, a saved dataset folder or a Hub name.
        dataset_config (`str`, *optional*): Hub dataset configuration.
        split (`str`, *optional*): split to evaluate; required for a Hub dataset or a multi-split folder (a single
            file is one split).
        subset_column (`str`, *optional*): column naming each row's subset.
        category_weights (`str`, *optional*): categories as a YAML/JSON file or inline mapping, e.g.
            `'{chat: [a, b], safety: {c: 1, d: 2}}'` (a list weights subsets by example count).
        output_dir (`str`): where `results.json`, `report.md` and the plots go.
        max_samples (`int`, *optional*): evaluate only the first N rows.
        bootstrap (`int`, *optional*, defaults to `1000`): bootstrap resamples for 95% intervals (0: none).
        ties (`str`, *optional*, defaults to `"loss"`): how equal scores count in accuracies.
        n_bins (`int`, *optional*, defaults to `10`): calibration bins.
        seed (`int`, *optional*, defaults to `0`): bootstrap seed.
        plots (`bool`, *optional*, defaults to `True`): write PNG plots (needs matplotlib, the `plots` extra).
    """

    model: list[str] | None = field(
        default=None, metadata={"help": "Reward model folder or Hub id (several, an ensemble: not wired yet)."}
    )
    dataset: str | None = field(
        default=None,
        metadata={"help": "Preference data: local file (.jsonl, .jsonl.gz, ...), saved folder or Hub name."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration."})
    split: str | None = field(
        default=None, metadata={"help": "Split to evaluate (required for Hub datasets and multi-split folders)."}
    )
    subset_column: str | None = field(default=None, metadata={"help": "Column naming each row's subset."})
    category_weights: str | None = field(
        default=None,
        metadata={"help": "Categories: YAML/JSON file or inline mapping {category: [subsets] or {subset: weight}}."},
    )
    output_dir: str | None = field(default=None, metadata={"help": "Where results.json, report.md and plots go."})
    max_samples: int | None = field(default=None, metadata={"help": "Evaluate only the first N rows."})
    bootstrap: int = field(default=1000, metadata={"help": "Bootstrap resamples for 95 percent intervals (0: none)."})
    ties: str = field(
        default="loss", metadata={"help": "How equal scores count in accuracies.", "choices": list(TIE_POLICIES)}
    )
    n_bins: int = field(default=10, metadata={"help": "Calibration bins."})
    seed: int = field(default=0, metadata={"help": "Bootstrap seed."})
    plots: bool = field(default=True, metadata={"help": "Write PNG plots (needs matplotlib: the `plots` extra)."})

    def __post_init__(self):
        if isinstance(self.model, str):  # a YAML `model: path` gives a string
            self.model = [self.model]
        _check_choice("ties", self.ties, TIE_POLICIES)
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {self.max_samples}")
        if self.bootstrap < 0:
            raise ValueError(f"bootstrap must be >= 0, got {self.bootstrap}")
        if self.n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {self.n_bins}")


@dataclass
class ScoreArguments:
    """
    Options of `trl-rewards score`.

    Parameters:
        model (`str`): reward model folder or Hub id.
        input (`str`): rows with a `completion` column and an optional `prompt` column (`.jsonl`, or any format
            `load_table` reads).
        output (`str`): `.jsonl` written with every input row plus its `score`.
    """

    model: str | None = field(default=None, metadata={"help": "Reward model folder or Hub id."})
    input: str | None = field(
        default=None, metadata={"help": "Rows with a `completion` column and an optional `prompt` column (.jsonl)."}
    )
    output: str | None = field(default=None, metadata={"help": "Output .jsonl: every input row plus its `score`."})
