"""Arguments of the command-line scripts that are not a trainer's config: data sources, scorer loading, eval, score.

Like the trainer configs, each is a dataclass whose fields carry `metadata={"help": ...}`, parsed by TRL's
`TrlParser` from flags and `--config` YAML files alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..evaluation.metrics import TIE_POLICIES
from ..evaluation.rewardbench import DEFAULT_PROMPT_TEMPLATE
from ..trainers.base_config import check_choice


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


SCORER_DTYPES = ("auto", "float32", "bfloat16", "float16")


MODEL_KINDS = ("auto", "reward", "attributes", "pairwise")


@dataclass
class ScorerArguments:
    """
    How `trl-rewards eval` and `trl-rewards score` load and run a reward model ([`RewardScorer`]).

    Parameters:
        batch_size (`int`, *optional*, defaults to `32`): most sequences per forward pass.
        max_tokens_per_batch (`int`, *optional*): most padded tokens per forward pass.
        max_length (`int`, *optional*): longer sequences are truncated as in training (counted in the report);
            default: the model's position limit (`max_position_embeddings`, or a smaller tokenizer
            `model_max_length`), so no sequence can exceed what the model reads.
        normalize (`bool`, *optional*, defaults to `False`): z-score with the `reward_mean`/`reward_std` stored in the
            model config by our trainers.
        dtype (`str`, *optional*): weights dtype; default: transformers' default.
        device (`str`, *optional*): default: `"cuda"` when available, else `"cpu"`.
        cache_path (`str`, *optional*): sqlite score cache ([`ScoreCache`]); only texts not scored before by the
            same weights and settings are computed.
        model_kind (`str`, *optional*, defaults to `"auto"`): `"reward"` (one score per text, [`RewardScorer`]),
            `"attributes"` (a multi-attribute model, combined by its stored weights, [`AttributeScorer`]),
            `"pairwise"` (a pair-PM, [`PairwiseScorer`]; RewardBench protocols only); `"auto"`: `"attributes"` when
            the saved model records attribute names, else `"reward"` (a pair-PM cannot be told apart: name it).
    """

    batch_size: int = field(default=32, metadata={"help": "Most sequences per forward pass."})
    max_tokens_per_batch: int | None = field(default=None, metadata={"help": "Most padded tokens per forward pass."})
    max_length: int | None = field(
        default=None,
        metadata={"help": "Truncate longer sequences as in training (default: the model's position limit)."},
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

    model_kind: str = field(
        default="auto",
        metadata={
            "help": "reward, attributes or pairwise (a pair-PM: RewardBench protocols only); auto: attributes when "
            "the saved model records attribute names, else reward.",
            "choices": list(MODEL_KINDS),
        },
    )

    def __post_init__(self):
        check_choice("model_kind", self.model_kind, MODEL_KINDS)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        for name in ("max_tokens_per_batch", "max_length"):
            value = getattr(self, name)
            if value is not None and value < 2:
                raise ValueError(f"{name} must be >= 2 or unset, got {value}")
        if self.dtype is not None:
            check_choice("dtype", self.dtype, SCORER_DTYPES)


PROTOCOLS = ("pairs", "rewardbench", "rewardbench2")


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
        protocol (`str`, *optional*, defaults to `"pairs"`): `"pairs"` (our categorized pairwise evaluation),
            `"rewardbench"` or `"rewardbench2"` (RewardBench's own scoring of its v1/v2 layouts, see
            `trl_rewards.evaluation.rewardbench`).
        prompt_template (`str`, *optional*): how RewardBench prompts are rendered for a tokenizer without a chat
            template (default: HH-RLHF's `\n\nHuman: {prompt}\n\nAssistant: `).
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
    protocol: str = field(
        default="pairs",
        metadata={
            "help": "pairs: our categorized pairwise evaluation; rewardbench / rewardbench2: RewardBench's own "
            "scoring of its v1 / v2 file layouts.",
            "choices": list(PROTOCOLS),
        },
    )
    prompt_template: str = field(
        default=DEFAULT_PROMPT_TEMPLATE,
        metadata={"help": "RewardBench protocols: how a prompt is rendered when the tokenizer has no chat template."},
    )

    def __post_init__(self):
        if isinstance(self.model, str):  # a YAML `model: path` gives a string
            self.model = [self.model]
        check_choice("ties", self.ties, TIE_POLICIES)
        check_choice("protocol", self.protocol, PROTOCOLS)
        if "{prompt}" not in self.prompt_template:
            raise ValueError(f"prompt_template must contain '{{prompt}}', got {self.prompt_template!r}")
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
