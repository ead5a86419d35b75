"""Loading reward models: stock Hugging Face heads, pad/eos fixes, quantization and PEFT wiring.

Reward models are plain `AutoModelForSequenceClassification(num_labels=1)` (Bradley-Terry, outcome) or
`AutoModelForTokenClassification` (process reward models, classifier style), so a saved model loads anywhere with
transformers alone; process reward models of the `"lm"` style are plain causal LMs. A LoRA adapter folder (with the
trained head in `modules_to_save`) loads here transparently, and `merge.merge_adapter` turns it into a plain model.
`peft` and `bitsandbytes` are imported only when used.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
)

from .step_format import FORMAT_ATTRIBUTE, PRM_STYLES, read_format_file

logger = logging.getLogger(__name__)

HEADS = {
    "sequence": AutoModelForSequenceClassification,
    "token": AutoModelForTokenClassification,
    "causal_lm": AutoModelForCausalLM,
}
# The PEFT task that trains and saves each head with the adapter (`modules_to_save`, or the LM head itself).
PEFT_TASKS = {"sequence": "SEQ_CLS", "token": "TOKEN_CLS", "causal_lm": "CAUSAL_LM"}
PRM_HEADS = {"classifier": "token", "lm": "causal_lm"}  # the head of each PRM style
ADAPTER_CONFIG = "adapter_config.json"
# A PEFT adapter folder holds no model config, so the reward statistics travel in their own file beside it.
REWARD_STATS_FILE = "reward_stats.json"
REWARD_STATS_KEYS = ("reward_mean", "reward_std", "reward_stats_source")


def save_reward_stats(model, output_dir: str) -> None:
    """Writes the reward statistics of `model.config` (if any) to `output_dir/reward_stats.json`."""
    stats = {k: getattr(model.config, k) for k in REWARD_STATS_KEYS if getattr(model.config, k, None) is not None}
    if stats:
        with open(os.path.join(output_dir, REWARD_STATS_FILE), "w") as f:
            json.dump(stats, f, indent=2)


def _load_reward_stats(model, path: str) -> None:
    stats_path = os.path.join(path, REWARD_STATS_FILE)
    if os.path.isfile(stats_path):
        with open(stats_path) as f:
            for key, value in json.load(f).items():
                setattr(model.config, key, value)


def is_decoder_model(model_or_config) -> bool:
    """True for causal decoders (reward read at the last non-pad token), False for encoders (`[CLS]` at position 0).

    A model type that has a masked-LM head (BERT, RoBERTa, DeBERTa) is an encoder even if it also has a causal head.
    """
    config = getattr(model_or_config, "config", model_or_config)
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    model_type = getattr(config, "model_type", None)
    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


@contextlib.contextmanager
def zero3_init_disabled():
    """
    Loads models inside this block whole, even in a process where DeepSpeed ZeRO-3 is active.

    Under ZeRO-3, transformers builds every model inside `deepspeed.zero.Init`, which partitions its weights across
    ranks; a model then used for plain inference (a reward model inside GRPO, a reloaded checkpoint) fails with
    "'weight' must be 2-D". Reward models used for scoring are replicated instead.
    """
    try:
        from transformers.integrations import deepspeed as hf_deepspeed
    except ImportError:  # transformers without the integration module: nothing to disable
        yield
        return
    saved = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed._hf_deepspeed_config_weak_ref = None
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved


HEAD_NAMES = ("score", "classifier")


def _cast_inputs_to_fp32(module, args, kwargs):
    cast = lambda x: x.float() if torch.is_tensor(x) and x.is_floating_point() else x  # noqa: E731
    return tuple(cast(a) for a in args), {k: cast(v) for k, v in kwargs.items()}


def upcast_reward_head(model) -> list[str]:
    """
    Keeps the trainable reward head (`score` / `classifier`, or its PEFT `modules_to_save` copy) in float32 and makes
    it cast its inputs to float32, so the rewards (and the loss) are computed in full precision even when the body
    runs in bf16 or 4-bit (QLoRA, where TRL casts every trainable parameter to bf16). Returns the names upcast.
    """
    names = []
    for name, module in model.named_modules():
        if name.split(".")[-1] not in HEAD_NAMES or not any(p.requires_grad for p in module.parameters()):
            continue
        if any(name.startswith(done + ".") for done in names):
            continue
        module.float()
        module.register_forward_pre_hook(_cast_inputs_to_fp32, with_kwargs=True)
        names.append(name)
    return names


def position_limit(model, tokenizer=None) -> int | None:
    """
    The longest sequence the model can read: its config's `max_position_embeddings` (`n_positions` for GPT-2-style
    configs), or the tokenizer's `model_max_length` when that is smaller and set; `None` when neither says.
    """
    config = getattr(model, "config", model)
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    limits = [getattr(config, name, None) for name in ("max_position_embeddings", "n_positions")]
    model_max = getattr(tokenizer, "model_max_length", None)
    limits.append(model_max if isinstance(model_max, int) and model_max < 1_000_000 else None)  # unset: ~1e30
    limits = [int(limit) for limit in limits if isinstance(limit, int) and limit > 0]
    return min(limits) if limits else None


def is_quantized(model) -> bool:
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def keep_reward_head_fp32(model, args) -> list[str]:
    """
    [`upcast_reward_head`] when it matters: the body is 4/8-bit (QLoRA, where TRL casts every trainable parameter,
    the head included, to bf16) or trains in bf16/fp16 (`args`: the trainer's config). Returns the names upcast (none
    for a model without a `score`/`classifier` head, e.g. a causal LM).
    """
    if is_quantized(model) or args.bf16 or args.fp16:
        return upcast_reward_head(model)
    return []


def is_adapter_path(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, ADAPTER_CONFIG))


def prepare_tokenizer(tokenizer, model=None):
    """
    Gives the tokenizer a pad token (its eos, then its sep token, as a last resort) and mirrors it onto the model
    config, which sequence-classification decoders need to find the last real token.
    """
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.sep_token
        if fallback is None:
            raise ValueError(
                f"tokenizer {type(tokenizer).__name__} has neither a pad, an eos nor a sep token; set "
                "`tokenizer.pad_token` before using it for a reward model"
            )
        tokenizer.pad_token = fallback
    if model is not None:
        model.config.get_text_config().pad_token_id = tokenizer.pad_token_id
    return tokenizer


def reward_peft_config(model_args, head: str = "sequence"):
    """
    TRL's `get_peft_config(model_args)` with the task type set from the head, so that PEFT trains and saves the
    reward head (`score` / `classifier`) with the adapter. Returns `None` when `model_args.use_peft` is off.
    """
    from trl import get_peft_config

    peft_config = get_peft_config(model_args)
    if peft_config is not None:
        peft_config.task_type = PEFT_TASKS[head]
    return peft_config


def model_init_kwargs(model_args=None, **overrides) -> dict[str, Any]:
    """`from_pretrained` kwargs from a TRL `ModelConfig`: dtype, revision, attention, 4/8-bit quantization."""
    kwargs: dict[str, Any] = {}
    if model_args is not None:
        from trl import get_quantization_config

        dtype = model_args.dtype
        kwargs["dtype"] = dtype if dtype in ("auto", None) else getattr(torch, dtype)
        kwargs["revision"] = model_args.model_revision
        kwargs["trust_remote_code"] = getattr(model_args, "trust_remote_code", None)  # moved to the trainer configs
        if model_args.attn_implementation is not None:
            kwargs["attn_implementation"] = model_args.attn_implementation
        quantization_config = get_quantization_config(model_args)
        if quantization_config is not None:
            if getattr(quantization_config, "llm_int8_skip_modules", "unset") is None:
                # transformers keeps only the *last parameter's* module unquantized: for a head with a bias (token
                # classifiers, BERT's `classifier`) that is "score.bias", so the head itself would become 4-bit and
                # untrainable. Name the heads (and the LM head, a default skip) explicitly.
                quantization_config.llm_int8_skip_modules = [*HEAD_NAMES, "lm_head"]
            kwargs["quantization_config"] = quantization_config
            if torch.cuda.is_available():  # k-bit weights must sit on this process's GPU from the start
                from accelerate import PartialState

                kwargs["device_map"] = {"": PartialState().local_process_index}
    kwargs.update(overrides)
    return {k: v for k, v in kwargs.items() if v is not None}


@contextlib.contextmanager
def _load_report_summarized():
    """
    While loading a reward model: transformers' LOAD REPORT (a table logged as a warning whenever a base model gets a
    new head, the normal case when training starts) is held back, and `_summarize_loading` logs one line instead. When
    loading fails, the held report is logged after all, since transformers' error message refers to it.
    """
    source, held = logging.getLogger("transformers.modeling_utils"), []

    def hold(record: logging.LogRecord) -> bool:
        if "LOAD REPORT" in record.getMessage():
            held.append(record)
            return False
        return True

    source.addFilter(hold)
    try:
        yield
    except BaseException:
        source.removeFilter(hold)
        for record in held:
            source.handle(record)
        raise
    finally:
        source.removeFilter(hold)


def _summarize_loading(path: str, info: dict) -> None:
    """One line for what transformers' LOAD REPORT says: a new (untrained) head is expected; other gaps are not."""
    reshaped = [key for key, *_ in info.get("mismatched_keys", ())]  # a head of another size, initialized anew
    missing = sorted([*info.get("missing_keys", ()), *reshaped])
    new_head = [k for k in missing if k.split(".")[0] in HEAD_NAMES]
    other = [k for k in missing if k not in new_head]
    unused = sorted(info.get("unexpected_keys", ()))
    if new_head:
        logger.info(
            "%s: new reward head %s initialized (trained from here)%s",
            path,
            ", ".join(new_head),
            f"; the checkpoint's {', '.join(unused)} unused (its own head)" if unused else "",
        )
    elif unused:
        logger.info("%s: checkpoint weights not used by this head: %s", path, ", ".join(unused))
    if other:
        logger.warning("%s: weights missing from the checkpoint, newly initialized: %s", path, ", ".join(other))


def load_reward_model(
    model_name_or_path: str,
    model_args=None,
    head: str = "sequence",
    num_labels: int = 1,
    tokenizer_name_or_path: str | None = None,
    base_model_name_or_path: str | None = None,
    partition_under_zero3: bool = True,
    require_trained_head: bool = False,
    **from_pretrained_kwargs,
):
    """
    Loads a reward model and its tokenizer from the Hub or a folder: a full model or a PEFT adapter folder.

    Args:
        model_name_or_path (`str`): Hub id or local folder.
        model_args ([`~trl.ModelConfig`], *optional*): dtype, revision, quantization settings.
        head (`str`): `"sequence"` (one score per sequence) or `"token"` (one score per token).
        num_labels (`int`): outputs of the head (1 for scalar rewards, 2 for a good/bad step classifier).
        tokenizer_name_or_path (`str`, *optional*): defaults to the model's (or the adapter's) folder.
        base_model_name_or_path (`str`, *optional*): for an adapter folder, the base model to load instead of the one
            recorded in `adapter_config.json`.
        partition_under_zero3 (`bool`): when DeepSpeed ZeRO-3 is active, `True` (for training) lets it partition the
            weights; `False` (for scoring) loads the whole model on this rank (see `zero3_init_disabled`).
        require_trained_head (`bool`): for scoring: raise a `ValueError` when the checkpoint holds no weights for the
            head (a base or causal LM loads with a randomly initialized head, whose scores mean nothing).
        **from_pretrained_kwargs: passed to `from_pretrained` (e.g. `gguf_file`, `dtype`).

    Returns:
        `(model, tokenizer)` in eval mode, pad token set on both.
    """
    if head not in ("sequence", "token"):  # a causal LM (PRM "lm" style) loads with load_process_reward_model
        raise ValueError(f"head must be one of ['sequence', 'token'], got {head!r}")
    if "config" in from_pretrained_kwargs:  # `from_pretrained` would hand num_labels to the model's __init__
        from_pretrained_kwargs["config"].num_labels = num_labels
        kwargs = model_init_kwargs(model_args, **from_pretrained_kwargs)
    else:
        kwargs = model_init_kwargs(model_args, num_labels=num_labels, **from_pretrained_kwargs)
    adapter_path = model_name_or_path if is_adapter_path(model_name_or_path) else None
    base_path = model_name_or_path
    if adapter_path is not None:
        with open(os.path.join(adapter_path, ADAPTER_CONFIG)) as f:
            base_path = base_model_name_or_path or json.load(f).get("base_model_name_or_path")
        if not base_path:
            raise ValueError(
                f"adapter {adapter_path!r} records no base model (base_model_name_or_path is empty, e.g. the base was "
                "built from a config); pass base_model_name_or_path="
            )
    tokenizer = AutoTokenizer.from_pretrained(
        tokenizer_name_or_path or model_name_or_path,
        **{k: kwargs[k] for k in ("revision", "trust_remote_code", "gguf_file") if k in kwargs},
    )
    with contextlib.nullcontext() if partition_under_zero3 else zero3_init_disabled(), _load_report_summarized():
        model, info = HEADS[head].from_pretrained(base_path, output_loading_info=True, **kwargs)
        missing = [k for k in info.get("missing_keys", ()) if k.split(".")[0] in HEAD_NAMES]
        _summarize_loading(base_path, info)
        if require_trained_head and missing and adapter_path is None:  # an adapter brings its head along
            raise ValueError(
                f"{model_name_or_path!r} holds no trained reward head (missing {sorted(missing)}): it is a base or "
                f"language model, so its scores would be random. Train it first (trl-rewards train bt|orm) or pass "
                "a reward model"
            )
        prepare_tokenizer(tokenizer, model)
        if adapter_path is not None:
            from peft import PeftModel

            _load_reward_stats(model, adapter_path)
            model = PeftModel.from_pretrained(model, adapter_path)
    model.eval()
    return model, tokenizer


def read_process_format(path: str) -> dict[str, Any] | None:
    """The step layout saved with a PRM: `process_reward.json` in the folder, else the model config's attribute."""
    saved = read_format_file(path) if os.path.isdir(path) else None
    if saved is not None:
        return saved
    if is_adapter_path(path):
        return None
    try:
        return getattr(AutoConfig.from_pretrained(path), FORMAT_ATTRIBUTE, None)
    except (OSError, ValueError):  # no config.json here (a GGUF-only folder, a Hub id that is not reachable)
        return None


def _sequence_reward_config(path: str):
    """
    The config of a trained 1-output sequence reward model (BT, outcome) at `path`, made ready to start a classifier
    PRM from its weights (2 labels, no reward statistics); `None` for anything else (a base model, an adapter).
    """
    if is_adapter_path(path):
        return None
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError):
        return None
    architectures = getattr(config, "architectures", None) or []
    if config.num_labels != 1 or not any(name.endswith("ForSequenceClassification") for name in architectures):
        return None
    config.num_labels = 2  # also resets id2label / label2id
    config.problem_type = None
    for key in REWARD_STATS_KEYS:
        config.__dict__.pop(key, None)
    return config


def load_process_reward_model(
    model_name_or_path: str,
    model_style: str | None = None,
    model_args=None,
    partition_under_zero3: bool = True,
    **from_pretrained_kwargs,
):
    """
    Loads a PRM (a trained one, or a base model to train) and its tokenizer: a full model or a PEFT adapter folder.

    Args:
        model_name_or_path (`str`): Hub id or folder; an adapter folder loads its base, then the adapter.
        model_style (`str`, *optional*): `"classifier"` (`AutoModelForTokenClassification`, 2 labels) or `"lm"`
            (`AutoModelForCausalLM`); read from the saved step layout when not given.
        model_args ([`~trl.ModelConfig`], *optional*): dtype, revision, quantization settings.
        partition_under_zero3 (`bool`): when DeepSpeed ZeRO-3 is active, `True` (for training) lets it partition the
            weights; `False` (for scoring) loads the whole model on this rank.
        **from_pretrained_kwargs: passed to `from_pretrained`.

    Returns:
        `(model, tokenizer)` in eval mode; the model config carries the saved step layout, if any.
    """
    saved = read_process_format(model_name_or_path)
    style = model_style or (saved or {}).get("model_style")
    if style not in PRM_STYLES:
        raise ValueError(
            f"model_style must be one of {PRM_STYLES} ({model_name_or_path!r} stores no step layout), got {style!r}"
        )
    if saved is not None and saved.get("model_style") not in (None, style):
        raise ValueError(
            f"{model_name_or_path!r} was trained with model_style={saved['model_style']!r}, not {style!r}"
        )
    if style == "classifier":
        reward_config = None if saved is not None else _sequence_reward_config(model_name_or_path)
        if reward_config is not None:  # a trained BT / outcome model: its body, a new 2-label token head
            from_pretrained_kwargs = {
                **from_pretrained_kwargs,
                "config": reward_config,
                "ignore_mismatched_sizes": True,
            }
            logger.info(
                "%s is a sequence reward model: the PRM starts from its weights, with a new head", model_name_or_path
            )
        model, tokenizer = load_reward_model(
            model_name_or_path,
            model_args=model_args,
            head="token",
            num_labels=2,
            partition_under_zero3=partition_under_zero3,
            **from_pretrained_kwargs,
        )
    else:
        kwargs = model_init_kwargs(model_args, **from_pretrained_kwargs)
        tokenizer = AutoTokenizer.from_pretrained(
            model_name_or_path, **{k: kwargs[k] for k in ("revision", "trust_remote_code") if k in kwargs}
        )
        with contextlib.nullcontext() if partition_under_zero3 else zero3_init_disabled():
            if is_adapter_path(model_name_or_path):
                from peft import PeftModel

                with open(os.path.join(model_name_or_path, ADAPTER_CONFIG)) as f:
                    base_path = json.load(f).get("base_model_name_or_path")
                if not base_path:
                    raise ValueError(f"adapter {model_name_or_path!r} records no base model (base_model_name_or_path)")
                base = AutoModelForCausalLM.from_pretrained(base_path, **kwargs)
                if base.get_input_embeddings().num_embeddings < len(tokenizer):  # the step tag was added in training
                    base.resize_token_embeddings(len(tokenizer))
                model = PeftModel.from_pretrained(base, model_name_or_path)
            else:
                model = AutoModelForCausalLM.from_pretrained(model_name_or_path, **kwargs)
        prepare_tokenizer(tokenizer, model)
        model.eval()
    if saved is not None:
        setattr(model.config, FORMAT_ATTRIBUTE, saved)
    return model, tokenizer
