"""Attribute rows: row-numbered validation (missing ratings allowed, bad ones named), tokenization identical to the
scorer's, length policy, the collator's NaN-masked ratings, and the HelpSteer2 converter."""

import math

import pytest
import torch
from datasets import Dataset, IterableDataset

from trl_rewards.data.attributes import (
    HELPSTEER2_ATTRIBUTES,
    AttributeCollator,
    check_attribute_names,
    from_helpsteer2,
    tokenize_attributes,
    validate_attribute_rows,
)
from trl_rewards.inference.sequence_scoring import RewardScorer
from trl_rewards.testing import tiny_llama_reward_model, tiny_llama_tokenizer

ATTRS = ("a", "b")


def _rows():
    return [
        {"prompt": "Q: ", "completion": "yes", "a": 3, "b": 1.5},
        {"prompt": "Q: ", "completion": "no", "a": None, "b": 0},  # a missing
        {"prompt": "Q: ", "completion": "maybe", "a": 2.0, "b": float("nan")},  # b missing (NaN)
        {"prompt": "Q: ", "completion": "so", "a": 4},  # b absent
    ]


def test_valid_rows_with_missing_ratings():
    validate_attribute_rows(_rows(), ATTRS)
    validate_attribute_rows(Dataset.from_list(_rows()), ATTRS)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"prompt": None}, 'row 1: "prompt" is missing'),
        ({"completion": "  "}, 'row 1: "completion" must be a non-empty string'),
        ({"a": True}, 'row 1: "a" must be a number'),
        ({"a": "3"}, 'row 1: "a" must be a number'),
        ({"b": float("inf")}, 'row 1: "b" is inf'),
        ({"a": None, "b": None}, "row 1: no rating at all"),
    ],
)
def test_bad_row_is_named(change, message):
    rows = _rows()
    rows[1] = {**rows[1], **change}
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        validate_attribute_rows(rows, ATTRS, source="train")


def test_attribute_never_rated_and_empty_data():
    with pytest.raises(ValueError, match=r"\['c'\] have no rating in any of its 2 rows"):
        validate_attribute_rows(_rows()[:2], ("b", "c"))
    with pytest.raises(ValueError, match="has no rows"):
        validate_attribute_rows([], ATTRS)


@pytest.mark.parametrize(
    "names, message",
    [([], "non-empty list"), (["a", "a"], "distinct"), (["prompt"], "cannot be an attribute"), ("ab", "list")],
)
def test_attribute_names_checked(names, message):
    with pytest.raises(ValueError, match=message):
        check_attribute_names(names)


def test_tokenized_like_the_scorer_with_nan_for_missing():
    model, tokenizer = tiny_llama_reward_model()
    tokenized, report = tokenize_attributes(Dataset.from_list(_rows()), tokenizer, ATTRS, max_length=64)
    scorer = RewardScorer(model, tokenizer)
    for row, features in zip(_rows(), tokenized, strict=True):
        assert features["input_ids"] == scorer.encode(row["prompt"], row["completion"])
        assert features["input_ids"][-1] == tokenizer.eos_token_id  # the stock head's read-out token
    ratings = tokenized["ratings"]
    assert ratings[0] == [3.0, 1.5] and math.isnan(ratings[1][0]) and math.isnan(ratings[2][1])
    assert math.isnan(ratings[3][1]) and report.n_too_long == 0


def test_length_policy():
    tokenizer = tiny_llama_tokenizer()
    rows = Dataset.from_list(
        [{"prompt": "Q: ", "completion": "x" * 30, "a": 1}, {"prompt": "Q", "completion": "y", "a": 2}]
    )
    truncated, report = tokenize_attributes(rows, tokenizer, ["a"], max_length=10)
    assert report.n_truncated == 1 and max(truncated["length"]) == 10
    assert truncated[0]["input_ids"][-1] == tokenizer.eos_token_id  # the end (and read-out) is kept
    dropped, report = tokenize_attributes(rows, tokenizer, ["a"], max_length=10, too_long="drop")
    assert len(dropped) == 1 and report.n_dropped == 1
    with pytest.raises(ValueError, match="max_length=10"):
        tokenize_attributes(rows, tokenizer, ["a"], max_length=10, too_long="error")


def test_stream_is_validated_row_by_row():
    tokenizer = tiny_llama_tokenizer()
    rows = _rows()[:2] + [{"prompt": "Q", "completion": "z", "a": "bad", "b": 1}]
    stream = IterableDataset.from_generator(lambda: iter(rows))
    tokenized, _ = tokenize_attributes(stream, tokenizer, ATTRS, max_length=64, name="train")
    with pytest.raises(ValueError, match='train row 2: "a" must be a number'):
        list(tokenized)


def test_collator_pads_and_keeps_nan():
    batch = AttributeCollator(pad_token_id=0)(
        [{"input_ids": [5, 6, 7], "ratings": [1.0, None]}, {"input_ids": [8], "ratings": [float("nan"), 2.0]}]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    ratings = batch["ratings"]
    assert ratings.shape == (2, 2) and ratings.dtype == torch.float
    assert torch.isnan(ratings).tolist() == [[False, True], [True, False]]


def test_from_helpsteer2():
    row = {"prompt": "p", "response": "r", **dict.fromkeys(HELPSTEER2_ATTRIBUTES, 2)}
    converted = from_helpsteer2(Dataset.from_list([row]))
    assert converted[0]["completion"] == "r" and "response" not in converted.column_names
    validate_attribute_rows(converted)
    with pytest.raises(ValueError, match="'response' column"):
        from_helpsteer2(converted)
