"""Offline test kit: tiny seeded models and tokenizers that need no download.

Used by the test suite, the multi-process scripts it launches and anyone who wants to try the package without the
Hub. Two families, mirroring what users train:

- a Llama-style decoder (`tiny_llama_*`): the reward is read at the last non-padding token, padding side matters;
- a BERT-style encoder (`tiny_bert_*`): the reward is read from the `[CLS]` token at position 0.

Both tokenizers are character level over printable ASCII, so any English text tokenizes without unknown tokens and
token counts are easy to reason about in tests (one character, one token).
"""

from __future__ import annotations

import string
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    BertConfig,
    LlamaConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

_CHARS = list(dict.fromkeys(string.printable))

LLAMA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '</s>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def _char_vocab(special: list[str]) -> dict[str, int]:
    return {token: i for i, token in enumerate(special + _CHARS)}


def tiny_llama_tokenizer() -> PreTrainedTokenizerFast:
    """Character-level tokenizer in the style of a Llama chat model: `<s>` prepended, `</s>` as eos, a distinct
    `<pad>`, role markers as special tokens and a chat template."""
    special = ["<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>", "<|system|>"]
    vocab = _char_vocab(special)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=["<|user|>", "<|assistant|>", "<|system|>"],
    )
    tokenizer.chat_template = LLAMA_CHAT_TEMPLATE
    return tokenizer


def tiny_bert_tokenizer() -> PreTrainedTokenizerFast:
    """Character-level tokenizer in the style of BERT: `[CLS] text [SEP]`, no eos token, `[PAD]` id 0."""
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = _char_vocab(special)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def _decoder_kwargs(tokenizer: PreTrainedTokenizerFast) -> dict:
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )


def tiny_llama_config(tokenizer: PreTrainedTokenizerFast, **overrides) -> LlamaConfig:
    return LlamaConfig(**{**_decoder_kwargs(tokenizer), **overrides})


def tiny_qwen2_config(tokenizer: PreTrainedTokenizerFast, **overrides) -> Qwen2Config:
    return Qwen2Config(**{**_decoder_kwargs(tokenizer), **overrides})


def tiny_bert_config(tokenizer: PreTrainedTokenizerFast, **overrides) -> BertConfig:
    kwargs = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
    )
    kwargs.update(overrides)
    return BertConfig(**kwargs)


def _build(auto_cls, config, seed: int, **config_kwargs):
    for key, value in config_kwargs.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    return auto_cls.from_config(config)


def tiny_llama_reward_model(seed: int = 0, **overrides):
    """Returns `(model, tokenizer)`: a seeded 2-layer Llama with a 1-output sequence-classification head."""
    tokenizer = tiny_llama_tokenizer()
    model = _build(AutoModelForSequenceClassification, tiny_llama_config(tokenizer, **overrides), seed, num_labels=1)
    return model, tokenizer


def tiny_qwen2_reward_model(seed: int = 0, **overrides):
    """Returns `(model, tokenizer)`: a seeded 2-layer Qwen2 (the Llama sizes and tokenizer) with a 1-output head."""
    tokenizer = tiny_llama_tokenizer()
    model = _build(AutoModelForSequenceClassification, tiny_qwen2_config(tokenizer, **overrides), seed, num_labels=1)
    return model, tokenizer


def tiny_bert_reward_model(seed: int = 0, **overrides):
    """Returns `(model, tokenizer)`: a seeded 2-layer BERT with a 1-output sequence-classification head."""
    tokenizer = tiny_bert_tokenizer()
    model = _build(AutoModelForSequenceClassification, tiny_bert_config(tokenizer, **overrides), seed, num_labels=1)
    return model, tokenizer


def tiny_llama_token_classifier(seed: int = 0, num_labels: int = 2, **overrides):
    """Returns `(model, tokenizer)`: a seeded 2-layer Llama with a token-classification head."""
    tokenizer = tiny_llama_tokenizer()
    config = tiny_llama_config(tokenizer, **overrides)
    model = _build(AutoModelForTokenClassification, config, seed, num_labels=num_labels)
    return model, tokenizer


def tiny_bert_token_classifier(seed: int = 0, num_labels: int = 2, **overrides):
    """Returns `(model, tokenizer)`: a seeded 2-layer BERT with a token-classification head."""
    tokenizer = tiny_bert_tokenizer()
    config = tiny_bert_config(tokenizer, **overrides)
    model = _build(AutoModelForTokenClassification, config, seed, num_labels=num_labels)
    return model, tokenizer


def save_tiny(model, tokenizer, path) -> str:
    """Saves a tiny model and its tokenizer to `path` so it can be loaded by name like a Hub model."""
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def tiny_training_args(config_cls, tmp_path, **overrides):
    """
    A trainer config (`BradleyTerryConfig`, `OutcomeRewardConfig`, `ProcessRewardConfig`, ...) for fast, deterministic
    CPU tests: output in `tmp_path / "out"`, batch 4, one epoch, lr 5e-3, a log every step, nothing saved or reported,
    no activation checkpointing, seed 0. `overrides` win.
    """
    defaults = dict(
        output_dir=str(Path(tmp_path) / "out"),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        num_train_epochs=1,
        learning_rate=5e-3,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        gradient_checkpointing=False,
        seed=0,
        dataloader_pin_memory=False,
    )
    defaults.update(overrides)
    return config_cls(**defaults)
