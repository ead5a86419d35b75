"""Pairwise preference rows: the fixed template, both orders of every pair, the prompt-first length policy, errors."""

import pytest
import torch
from datasets import Dataset

from trl_rewards.data.pairwise import (
    PairwiseCollator,
    encode_pair_orders,
    frame_ids,
    split_implicit_prompt,
    tokenize_pairwise,
    validate_pairwise_rows,
)
from trl_rewards.testing import tiny_bert_tokenizer, tiny_llama_tokenizer

# the character-level test tokenizers: one character, one token
TEMPLATE_CHARS = len("[Prompt]\n") + len("\n\n[Response A]\n") + len("\n\n[Response B]\n")


def _text(prompt, a, b):
    return f"[Prompt]\n{prompt}\n\n[Response A]\n{a}\n\n[Response B]\n{b}"


def _decode(tok, ids):
    return "".join(tok.convert_ids_to_tokens(ids))


def test_split_implicit_prompt():
    chosen = "\n\nHuman: hi\n\nAssistant: yo\n\nHuman: and?\n\nAssistant: fine thanks"
    rejected = "\n\nHuman: hi\n\nAssistant: yo\n\nHuman: and?\n\nAssistant: go away"
    prompt, a, b = split_implicit_prompt(chosen, rejected)
    assert prompt == "\n\nHuman: hi\n\nAssistant: yo\n\nHuman: and?\n\nAssistant:"
    assert (a, b) == (" fine thanks", " go away")
    # without the marker: the shared prefix up to its last whitespace, so no word is split
    assert split_implicit_prompt("the cat sat", "the car sat") == ("the ", "cat sat", "car sat")
    assert split_implicit_prompt("yes", "no") == ("", "yes", "no")
    # HH-RLHF has empty responses (an assistant that said nothing): kept
    assert split_implicit_prompt("H\n\nAssistant: ", "H\n\nAssistant: ok") == ("H\n\nAssistant:", " ", " ok")


@pytest.mark.parametrize(
    "make_tok, lead, trail", [(tiny_bert_tokenizer, ["[CLS]"], ["[SEP]"]), (tiny_llama_tokenizer, ["<s>"], ["</s>"])]
)
def test_frame_ids(make_tok, lead, trail):
    tok = make_tok()
    assert [tok.convert_ids_to_tokens(ids) for ids in frame_ids(tok)] == [lead, trail]


def test_training_data_holds_both_orders_with_complementary_targets():
    """Every tokenized row is one pair in both orders: `ab_ids` = (chosen, rejected) with target `label`, `ba_ids` =
    (rejected, chosen), which the trainer gives the target 1 - label; the collator stacks the (A, B) orders, then the
    (B, A) orders of the same pairs."""
    tok = tiny_bert_tokenizer()
    rows = [
        {"prompt": "q1?", "chosen": "good", "rejected": "bad", "label": 1.0},
        {"prompt": "q2?", "chosen": "meh", "rejected": "ok", "label": 0.25},
    ]
    tokenized, report = tokenize_pairwise(Dataset.from_list(rows), tok, max_length=None)
    assert report.n_too_long == 0 and len(tokenized) == 2
    for row, out in zip(rows, tokenized, strict=True):
        assert _decode(tok, out["ab_ids"]) == "[CLS]" + _text(row["prompt"], row["chosen"], row["rejected"]) + "[SEP]"
        assert _decode(tok, out["ba_ids"]) == "[CLS]" + _text(row["prompt"], row["rejected"], row["chosen"]) + "[SEP]"
        assert out["label"] == row["label"]
        assert out["length"] == len(out["ab_ids"]) == len(out["ba_ids"])
    batch = PairwiseCollator(pad_token_id=tok.pad_token_id)(list(tokenized))
    assert batch["input_ids"].shape == (4, max(tokenized["length"]))
    for i, out in enumerate(tokenized):
        n = out["length"]
        assert batch["input_ids"][i, :n].tolist() == out["ab_ids"]
        assert batch["input_ids"][2 + i, :n].tolist() == out["ba_ids"]
        assert batch["attention_mask"][i].sum() == n
    torch.testing.assert_close(batch["label"], torch.tensor([1.0, 0.25]))


def test_default_label_and_implicit_prompt():
    tok = tiny_llama_tokenizer()
    rows = [{"chosen": "\n\nHuman: q\n\nAssistant: yes", "rejected": "\n\nHuman: q\n\nAssistant: no"}]
    tokenized, _ = tokenize_pairwise(Dataset.from_list(rows), tok, max_length=None)
    out = tokenized[0]
    assert out["label"] == 1.0
    assert _decode(tok, out["ab_ids"]) == "<s>" + _text("\n\nHuman: q\n\nAssistant:", " yes", " no") + "</s>"


def test_long_pair_loses_the_start_of_its_prompt_never_a_response():
    tok = tiny_bert_tokenizer()
    fixed = 2 + TEMPLATE_CHARS  # [CLS] + template + [SEP]
    rows = [
        {"prompt": "0123456789", "chosen": "aaaa", "rejected": "bbb"},  # fits with 3 prompt tokens
        {"prompt": "p", "chosen": "a" * 10, "rejected": "b" * 10},  # the responses alone do not fit
        {"prompt": "xy", "chosen": "c", "rejected": "d"},  # fits as is
    ]
    max_length = fixed + 4 + 3 + 3
    tokenized, report = tokenize_pairwise(Dataset.from_list(rows), tok, max_length=max_length)
    assert (report.n_too_long, report.n_truncated, report.n_dropped, report.n_kept) == (2, 1, 1, 2)
    assert "dropped" in report.message() and "prompt" in report.message()
    first = tokenized[0]
    assert _decode(tok, first["ab_ids"]) == "[CLS]" + _text("789", "aaaa", "bbb") + "[SEP]"
    assert _decode(tok, first["ba_ids"]) == "[CLS]" + _text("789", "bbb", "aaaa") + "[SEP]"
    assert first["length"] == max_length
    assert _decode(tok, tokenized[1]["ab_ids"]) == "[CLS]" + _text("xy", "c", "d") + "[SEP]"
    dropped, report = tokenize_pairwise(Dataset.from_list(rows), tok, max_length=max_length, too_long="drop")
    assert report.n_dropped == 2 and len(dropped) == 1
    with pytest.raises(ValueError, match="row 0"):
        tokenize_pairwise(Dataset.from_list(rows), tok, max_length=max_length, too_long="error")


def test_cut_responses_for_scoring_is_symmetric():
    """The scorer's setting: when the responses alone do not fit, each gets an equal share (the shorter one whole
    when it fits in half), both orders cut alike."""
    tok = tiny_bert_tokenizer()
    fixed = 2 + TEMPLATE_CHARS
    ids = encode_pair_orders(tok, "prompt", "a" * 10, "b" * 3, max_length=fixed + 8, cut_responses=True)
    assert ids.responses_cut and ids.prompt_cut == 6 and ids.full_length == fixed + 19
    assert _decode(tok, ids.ab) == "[CLS]" + _text("", "a" * 5, "bbb") + "[SEP]"
    assert _decode(tok, ids.ba) == "[CLS]" + _text("", "bbb", "a" * 5) + "[SEP]"
    both_long = encode_pair_orders(tok, None, "a" * 10, "b" * 10, max_length=fixed + 7, cut_responses=True)
    assert _decode(tok, both_long.ab) == "[CLS]" + _text("", "aaa", "bbb") + "[SEP]"
    assert encode_pair_orders(tok, None, "a" * 10, "b" * 10, max_length=fixed + 7).ab == []
    with pytest.raises(ValueError, match="max_length=10"):
        encode_pair_orders(tok, "p", "a", "b", max_length=10)


@pytest.mark.parametrize(
    "rows, match",
    [
        ([{"chosen_ids": [1, 2], "rejected_ids": [1, 3]}], "pretokenized"),
        (
            [{"chosen": [{"role": "user", "content": "a"}], "rejected": [{"role": "user", "content": "b"}]}],
            "conversational",
        ),
        ([{"prompt": "q", "chosen": "a", "rejected": "b", "margin": 1.0}], "margin"),
        ([{"prompt": "q", "chosen": "a", "rejected": "b"}, {"prompt": "q", "chosen": "a", "rejected": "a"}], "row 1"),
        ([{"prompt": "q", "chosen": "a", "rejected": "b", "label": 1.5}], 'row 0: "label"'),
        ([{"prompt": "q", "chosen": " ", "rejected": "b"}], 'row 0: "chosen" is empty'),
    ],
)
def test_bad_rows_are_refused_with_the_reason(rows, match):
    with pytest.raises(ValueError, match=match):
        validate_pairwise_rows(Dataset.from_list(rows))
    with pytest.raises(ValueError, match=match):
        tokenize_pairwise(Dataset.from_list(rows), tiny_bert_tokenizer(), max_length=None)


def test_stream_matches_the_dataset():
    tok = tiny_llama_tokenizer()
    rows = [{"prompt": f"q{i}", "chosen": "yes" * (1 + i), "rejected": "no", "label": 0.8} for i in range(5)]
    whole, _ = tokenize_pairwise(Dataset.from_list(rows), tok, max_length=60)
    stream, report = tokenize_pairwise(Dataset.from_list(rows).to_iterable_dataset(), tok, max_length=60)
    assert [dict(r) for r in stream] == [dict(r) for r in whole]
    assert report.n_rows == 5
    bad = rows + [{"prompt": "q", "chosen": "x", "rejected": "x", "label": 1.0}]
    stream, _ = tokenize_pairwise(Dataset.from_list(bad).to_iterable_dataset(), tok, max_length=60, name="train")
    with pytest.raises(ValueError, match="train: row 5"):
        list(stream)
