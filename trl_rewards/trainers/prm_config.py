"""Configuration of [`ProcessRewardTrainer`]: TRL's base training arguments plus the step layout and step options."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl.trainer.base_config import _BaseConfig

from ..step_format import DEFAULT_STEP_SEPARATOR, LM_STYLE_DEFAULTS, PRM_STYLES
from .base_config import TrainingFields, check_choice, resolve_host_defaults


@dataclass
class ProcessRewardConfig(TrainingFields, _BaseConfig):
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
            "choices": list(PRM_STYLES),
        },
    )
    step_separator: str = field(
        default=DEFAULT_STEP_SEPARATOR,
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
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Allow custom model code from the Hub when the model is loaded from a name (as TRL's)."},
    )
    learning_rate: float = field(default=1e-5, metadata={"help": "The initial learning rate for AdamW."})

    def __post_init__(self):
        resolve_host_defaults(self)
        self.check_training_fields()
        check_choice("model_style", self.model_style, PRM_STYLES)
        for name, default in LM_STYLE_DEFAULTS.items():
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
