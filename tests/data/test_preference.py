"""Preference formats, row-numbered validation, over-long handling and collation."""

import json

import pytest
import torch
from datasets import Dataset

from trl_rewards.data.collators import PreferenceCollator
from trl_rewards.data.length import truncate_ids
from trl_rewards.data.preference import detect_preference_format, tokenize_preferences, validate_preference_rows
from trl_rewards.testing import tiny_bert_tokenizer, tiny_llama_tokenizer


def _ds(rows):
    return Dataset.from_list(rows)


@pytest.mark.parametrize(
    "rows, expected",
    [
        ([{"chosen": "a b", "rejected": "a c"}], "implicit_prompt"),
        ([{"prompt": "q", "chosen": "a", "rejected": "b"}], "explicit_prompt"),
        (
            [
                {
                    "prompt": [{"role": "user", "content": "q"}],
                    "chosen": [{"role": "assistant", "content": "a"}],
                    "rejected": [{"role": "assistant", "content": "b"}],
                }
            ],
            "conversational",
        ),
        ([{"chosen_ids": [1, 2], "rejected_ids": [1, 3]}], "pretokenized"),
    ],
)
def test_formats_detected_and_valid(rows, expected):
    assert validate_preference_rows(_ds(rows)) == expected


def test_missing_column_names_field():
    with pytest.raises(ValueError, match='needs a "rejected" column'):
        detect_preference_format(["chosen", "prompt"])


@pytest.mark.parametrize(
    "bad_row, message",
    [
        ({"prompt": "q", "chosen": "", "rejected": "b"}, 'row 1: "chosen" is empty'),
        ({"prompt": "q", "chosen": "a", "rejected": "   "}, 'row 1: "rejected" is empty'),
        ({"prompt": "q", "chosen": "same", "rejected": "same"}, 'row 1: "chosen" and "rejected" are identical'),
        ({"prompt": "", "chosen": "a", "rejected": "b"}, 'row 1: "prompt" is empty'),
        ({"prompt": "q", "chosen": None, "rejected": "b"}, r'row 1: "chosen" is missing \(None\)'),
    ],
)
def test_bad_text_rows_name_row_and_field(bad_row, message):
    rows = [{"prompt": "q", "chosen": "a", "rejected": "b"}, bad_row]
    with pytest.raises(ValueError, match=message):
        validate_preference_rows(_ds(rows))


def test_non_string_field_names_row_and_field():
    # A column mixing types cannot be built by `datasets`; a wrongly typed column still reaches validation.
    rows = [{"chosen": "a", "rejected": 3}, {"chosen": "b", "rejected": 4}]
    with pytest.raises(ValueError, match=r'row 0: "rejected" must be a string, got int'):
        validate_preference_rows(_ds(rows))


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("label", 1.5, r'row 1: "label" must lie in \[0.0, 1.0\], got 1.5'),
        ("label", -0.1, r'row 1: "label" must lie in \[0.0, 1.0\], got -0.1'),
        ("label", float("nan"), r'row 1: "label" must be a finite number, got nan'),
        ("margin", float("inf"), r'row 1: "margin" must be a finite number, got inf'),
    ],
)
def test_bad_label_and_margin(field, value, message):
    rows = [{"chosen": "a", "rejected": "b", field: 0.5}, {"chosen": "c", "rejected": "d", field: value}]
    with pytest.raises(ValueError, match=message):
        validate_preference_rows(_ds(rows))


def test_bad_messages_name_row_and_field():
    good = {"chosen": [{"role": "assistant", "content": "a"}], "rejected": [{"role": "assistant", "content": "b"}]}
    bad = {"chosen": [{"role": "assistant", "content": "a"}], "rejected": [{"role": "assistant", "content": None}]}
    with pytest.raises(ValueError, match=r'row 1: "rejected"\[0\]\["content"\] must be a string'):
        validate_preference_rows(_ds([good, bad]))


def test_bad_token_ids():
    rows = [{"chosen_ids": [1, 2], "rejected_ids": [1, 3]}, {"chosen_ids": [1, 2], "rejected_ids": []}]
    with pytest.raises(ValueError, match='row 1: "rejected_ids" must be a non-empty list of token ids'):
        validate_preference_rows(_ds(rows))


def test_empty_dataset():
    with pytest.raises(ValueError, match="empty"):
        validate_preference_rows(Dataset.from_dict({"chosen": [], "rejected": []}))


def test_decoder_tokenization_appends_eos_once():
    """Llama-style: `<s>` + characters + `</s>`; an explicit prompt is prepended to both sides."""
    tok = tiny_llama_tokenizer()
    out, report = tokenize_preferences(_ds([{"prompt": "Q:", "chosen": "ab", "rejected": "c"}]), tok, max_length=64)
    assert out[0]["chosen_ids"] == [tok.bos_token_id, *tok.convert_tokens_to_ids(list("Q:ab")), tok.eos_token_id]
    assert out[0]["rejected_ids"] == [tok.bos_token_id, *tok.convert_tokens_to_ids(list("Q:c")), tok.eos_token_id]
    assert out[0]["length"] == 6
    assert report.n_too_long == 0


def test_encoder_tokenization_keeps_sep_and_adds_no_eos():
    """BERT-style tokenizers have no eos: `[CLS] text [SEP]` is used as is."""
    tok = tiny_bert_tokenizer()
    out, _ = tokenize_preferences(_ds([{"chosen": "ab", "rejected": "c"}]), tok, max_length=64)
    assert out[0]["chosen_ids"] == [tok.cls_token_id, *tok.convert_tokens_to_ids(list("ab")), tok.sep_token_id]


def test_conversational_uses_chat_template():
    tok = tiny_llama_tokenizer()
    row = {
        "prompt": [{"role": "user", "content": "hi"}],
        "chosen": [{"role": "assistant", "content": "yo"}],
        "rejected": [{"role": "assistant", "content": "no"}],
    }
    out, _ = tokenize_preferences(_ds([row]), tok, max_length=64)
    assert tok.decode(out[0]["chosen_ids"]) == "<|user|>hi</s><|assistant|>yo</s>"


def test_truncate_ids_keeps_leading_specials_and_end():
    """[CLS]=2 kept at position 0, then the last 3 tokens: [2, 7, 8, 3]."""
    assert truncate_ids([2, 5, 6, 7, 8, 3], 4, {2, 3}) == [2, 7, 8, 3]
    assert truncate_ids([5, 6], 4, {2}) == [5, 6]


def _long_rows():
    return [
        {"chosen": "short", "rejected": "tiny"},
        {"chosen": "x" * 50, "rejected": "y"},
        {"chosen": "z", "rejected": "w" * 40},
    ]


def test_too_long_truncate_reports_count():
    tok = tiny_llama_tokenizer()
    out, report = tokenize_preferences(_ds(_long_rows()), tok, max_length=10, too_long="truncate")
    assert (report.n_rows, report.n_too_long, report.n_kept, report.longest) == (3, 2, 3, 52)
    assert max(out["length"]) == 10
    assert out[1]["chosen_ids"][0] == tok.bos_token_id and out[1]["chosen_ids"][-1] == tok.eos_token_id
    assert "2 of 3 pairs" in report.message("train") and "truncated" in report.message("train")


def test_too_long_drop_reports_count():
    tok = tiny_llama_tokenizer()
    out, report = tokenize_preferences(_ds(_long_rows()), tok, max_length=10, too_long="drop")
    assert (report.n_too_long, report.n_kept, len(out)) == (2, 1, 1)
    assert "dropped" in report.message()


def test_too_long_error_names_first_row():
    with pytest.raises(ValueError, match=r"2 pairs exceed max_length=10; first is row 1 \(52 tokens\)"):
        tokenize_preferences(_ds(_long_rows()), tiny_llama_tokenizer(), max_length=10, too_long="error")


def test_unknown_too_long_policy():
    with pytest.raises(ValueError, match="too_long must be one of"):
        tokenize_preferences(_ds(_long_rows()), tiny_llama_tokenizer(), max_length=10, too_long="skip")


def test_margin_and_label_survive_tokenization_and_collation():
    tok = tiny_llama_tokenizer()
    rows = [
        {"chosen": "ab", "rejected": "c", "margin": 0.5, "label": 0.9},
        {"chosen": "abc", "rejected": "d", "margin": 0.0, "label": 0.6},
    ]
    out, _ = tokenize_preferences(_ds(rows), tok, max_length=None)
    batch = PreferenceCollator(pad_token_id=tok.pad_token_id)([out[0], out[1]])
    assert batch["input_ids"].shape == (4, 5)  # chosen rows, then rejected rows; longest is <s>abc</s>
    torch.testing.assert_close(batch["margin"], torch.tensor([0.5, 0.0]))
    torch.testing.assert_close(batch["label"], torch.tensor([0.9, 0.6]))
    assert batch["attention_mask"].sum().item() == 4 + 5 + 3 + 3


def test_drop_everything_is_an_error():
    with pytest.raises(ValueError, match="all 3 pairs exceed max_length=3"):
        tokenize_preferences(_ds(_long_rows()), tiny_llama_tokenizer(), max_length=3, too_long="drop")


# Streaming datasets, tool calls, template kwargs and legacy columns (what trl.RewardTrainer accepts)


def test_stream_tokenizes_like_a_dataset_and_reports_what_was_read():
    """The same rows as a stream give the same features; the report counts the pairs read so far (2 of 3 too long,
    as in `test_too_long_truncate_reports_count`)."""
    tok = tiny_llama_tokenizer()
    rows = [{**row, "margin": 0.5, "label": 0.9} for row in _long_rows()]
    expected, _ = tokenize_preferences(_ds(rows), tok, max_length=10)
    stream, report = tokenize_preferences(_ds(rows).to_iterable_dataset(), tok, max_length=10)
    assert report.n_rows == 0 and "no pairs read yet" in report.message("s")
    assert list(stream) == expected.to_list()
    assert (report.n_rows, report.n_too_long, report.n_truncated, report.longest) == (3, 2, 2, 52)
    assert "2 of 3 pairs" in report.message("s") and "read so far" in report.message("s")
    assert len(list(stream)) == 3 and report.n_rows == 3  # a second pass counts again from zero


def test_stream_drop_and_error_policies_apply_per_row():
    tok = tiny_llama_tokenizer()
    stream, report = tokenize_preferences(_ds(_long_rows()).to_iterable_dataset(), tok, max_length=10, too_long="drop")
    assert [row["length"] for row in stream] == [7]
    assert (report.n_too_long, report.n_dropped, report.n_kept) == (2, 2, 1)
    stream, _ = tokenize_preferences(_ds(_long_rows()).to_iterable_dataset(), tok, 10, "error", name="train")
    with pytest.raises(ValueError, match=r"train: row 1 has 52 tokens, more than max_length=10"):
        list(stream)


def test_stream_rows_are_validated_when_read():
    rows = [{"chosen": "a", "rejected": "b", "label": 1.0}, {"chosen": "c", "rejected": "d", "label": 1.5}]
    stream, _ = tokenize_preferences(_ds(rows).to_iterable_dataset(), tiny_llama_tokenizer(), 64, name="eval")
    with pytest.raises(ValueError, match=r'eval: row 1: "label" must lie in \[0.0, 1.0\], got 1.5'):
        list(stream)
    with pytest.raises(ValueError, match="train is empty"):
        tokenize_preferences(_ds(rows).to_iterable_dataset().take(0), tiny_llama_tokenizer(), 64, name="train")


def _tool_row(**extra):
    call = {"type": "function", "function": {"name": "f", "arguments": "{}"}}
    return {
        "chosen": [{"role": "assistant", "content": None, "tool_calls": [call]}, {"role": "tool", "content": "1"}],
        "rejected": [{"role": "assistant", "content": "no", "tool_calls": None}, {"role": "tool", "content": "2"}],
        **extra,
    }


def test_tool_call_messages_without_content_are_valid():
    assert validate_preference_rows(_ds([_tool_row()])) == "conversational"


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"tools": "[{not json"}, r'row 0: "tools" is not valid JSON'),
        ({"tools": json.dumps({"name": "f"})}, r'row 0: "tools" must be a list of tool schemas'),
        ({"chat_template_kwargs": json.dumps({"a": 1})}, r'row 0: "chat_template_kwargs" must be a dict, got str'),
        ({"chat_template_kwargs": {"tokenize": True}}, r"row 0: \"chat_template_kwargs\" may not set \['tokenize'\]"),
    ],
)
def test_bad_tools_and_template_kwargs_name_row_and_field(extra, message):
    with pytest.raises(ValueError, match=message):
        validate_preference_rows(_ds([_tool_row(**extra)]))


def test_tools_and_template_kwargs_are_passed_to_the_template():
    """The template sees `tools` (from JSON text) and `chat_template_kwargs` exactly as apply_chat_template would."""
    tok = tiny_llama_tokenizer()
    tok.chat_template = (
        "{{ tools[0]['name'] }}:{{ flag }}|{% for m in messages %}{{ m['content'] or 'call' }};{% endfor %}"
    )
    row = _tool_row(tools=json.dumps([{"name": "f"}]), chat_template_kwargs={"flag": "on"})
    out, _ = tokenize_preferences(_ds([row]), tok, max_length=None)
    assert tok.decode(out[0]["chosen_ids"]) == "f:on|call;1;"
    assert tok.decode(out[0]["rejected_ids"]) == "f:on|no;2;"


def test_legacy_id_columns_renamed_with_one_future_warning():
    rows = [{"chosen_input_ids": [1, 5, 2], "rejected_input_ids": [1, 6, 2]}]
    assert validate_preference_rows(_ds(rows)) == "pretokenized"  # what `trl-rewards train` checks up front
    with pytest.warns(FutureWarning, match="chosen_input_ids") as record:
        out, _ = tokenize_preferences(_ds(rows), tiny_llama_tokenizer(), max_length=None)
    assert len(record) == 1
    assert (out[0]["chosen_ids"], out[0]["rejected_ids"]) == ([1, 5, 2], [1, 6, 2])


def test_unknown_chat_role_is_named():
    """A chat template renders an unknown role ("robot") verbatim or drops it: the model would train on other text
    than the user meant."""
    rows = Dataset.from_list(
        [
            {"chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}],
             "rejected": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "b"}]},
        ]
    )  # fmt: skip
    with pytest.raises(ValueError, match=r'row 0: "rejected"\[1\]\["role"\] is \'robot\''):
        validate_preference_rows(rows)


def test_out_of_vocabulary_token_ids_are_named_before_the_forward():
    """Pre-tokenized ids past the vocabulary used to fail inside the embedding lookup with a bare IndexError."""
    tokenizer = tiny_llama_tokenizer()
    rows = Dataset.from_list(
        [
            {"chosen_ids": [1, 5, 6], "rejected_ids": [1, 5, 7]},
            {"chosen_ids": [1, 9], "rejected_ids": [1, len(tokenizer)]},
        ]
    )
    with pytest.raises(ValueError, match=rf'row 1: "rejected_ids" holds token id {len(tokenizer)}, outside'):
        tokenize_preferences(rows, tokenizer, max_length=None)


def test_a_cut_that_makes_both_sides_identical_drops_the_pair():
    """Two answers that differ only at their start: truncation keeps the end of each (where a decoder reads the
    reward), so both become `<s> ...same tail </s>`; such a pair carries no preference and is dropped, counted."""
    tokenizer = tiny_llama_tokenizer()
    tail = " and the rest of the answer is the same"
    rows = Dataset.from_list(
        [
            {"prompt": "Q: ", "chosen": "yes" + tail, "rejected": "no" + tail},
            {"prompt": "Q: ", "chosen": "a", "rejected": "b"},
        ]
    )
    tokenized, report = tokenize_preferences(rows, tokenizer, max_length=20)
    assert len(tokenized) == 1 and (report.n_too_long, report.n_dropped) == (1, 1)
    assert "made identical is dropped" in report.message()
