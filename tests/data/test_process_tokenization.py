"""EncodedSteps.fit and tokenize_stepwise on over-long rows: cuts only at step boundaries (the prompt's tokens first,
then whole leading steps with their labels, counted), a kept label always keeps its whole step, and a row whose last
step alone does not fit is dropped. The tiny tokenizer is character level: one character, one token."""

import pytest
from datasets import Dataset
from transformers import AddedToken

from trl_rewards.data.process_tokenization import build_step_format, encode_steps, tokenize_stepwise
from trl_rewards.data.stepwise import from_prm800k_stepwise_critic
from trl_rewards.testing import tiny_llama_tokenizer

TAG = "<|prm_label|>"


def _classifier():
    tok = tiny_llama_tokenizer()
    return tok, build_step_format(tok, "classifier", "\n")


def _tokens(tok, ids):
    return tok.convert_ids_to_tokens(ids)


def test_prompt_tokens_go_first_and_steps_stay_whole():
    """`<s>` + "a much longer prompt" (20) + "b" + "\\n" = 23 tokens; max_length 10 cuts 13 prompt tokens, keeping
    `<s>`, the last 7 prompt characters and the step with its label (index 9)."""
    tok, fmt = _classifier()
    fitted = encode_steps(tok, fmt, "a much longer prompt", ["b"]).fit(10)
    assert _tokens(tok, fitted.input_ids) == ["<s>", *" prompt", "b", "\n"]
    assert fitted.label_positions == [9] and fitted.step_starts == [8] and fitted.n_dropped_steps == 0


def test_a_kept_label_keeps_all_its_step_text():
    """`<s>` p a `\\n` "a long step here" (16) `\\n` = 21 tokens. The last step alone is `<s>` + 16 + 1 = 18 tokens:
    - max_length 18: the prompt "p" and step 1 ("a\\n") go whole; step 2 keeps all 16 characters, label at 17;
    - max_length 10: step 2 does not fit whole, so the row cannot be cut (it used to become "e" + its label)."""
    tok, fmt = _classifier()
    encoded = encode_steps(tok, fmt, "p", ["a", "a long step here"])
    assert len(encoded.input_ids) == 21 and encoded.min_length() == 18
    fitted = encoded.fit(18)
    assert _tokens(tok, fitted.input_ids) == ["<s>", *"a long step here", "\n"]
    assert fitted.label_positions == [None, 17] and fitted.step_starts == [None, 1] and fitted.n_dropped_steps == 1
    assert fitted.token_labels([True, False]) == [-100] * 17 + [0]
    assert encoded.fit(10) is None
    assert encoded.fit(21) is encoded and encoded.fit(None) is encoded


def test_lm_style_drops_a_step_with_its_tag():
    """lm style, step end = TAG `\\n`: `<s>` Q (1) + "x" TAG `\\n` + "yz" TAG `\\n` = 1 + 1 + 3 + 4 = 9 tokens.
    max_length 6: cutting the prompt (1) is not enough (excess 3), so "Q" and step 1 (3 tokens) go: 5 tokens,
    `<s>` y z TAG `\\n`, the label on the TAG at index 3."""
    tok = tiny_llama_tokenizer()
    tok.add_tokens([AddedToken(TAG, special=True, normalized=False)])
    fmt = build_step_format(tok, "lm", "\n", TAG)
    fitted = encode_steps(tok, fmt, "Q", ["x", "yz"]).fit(6)
    assert _tokens(tok, fitted.input_ids) == ["<s>", "y", "z", TAG, "\n"]
    assert fitted.label_positions == [None, 3]


def _rows():
    return Dataset.from_list(
        [
            {"prompt": "q", "completions": ["s1", "s2"], "labels": [True, False]},  # 1 + 1 + 3 + 3 = 8 tokens
            # 1 + 2 + (5 + 5 + 5) = 18 tokens: the first two steps must go for 9 tokens
            {"prompt": "Q:", "completions": ["aaaa", "bbbb", "cccc"], "labels": [True, True, False]},
            {"prompt": "r", "completions": ["a long final step"], "labels": [True]},  # 1 + 1 + 18 = 20: dropped
        ]
    )


def test_tokenize_stepwise_keeps_rows_by_dropping_leading_steps_and_counts_their_labels():
    """max_length 9. Row 0 fits (8). Row 1 (18 tokens, excess 9): prompt (2) + step 1 (5) = 7 < 9, so steps 1 and 2
    go (12 tokens): `<s>` cccc `\\n`, 6 tokens, only step 3's label (0) left, 2 labels dropped. Row 2: its only step
    needs 1 + 18 = 19 > 9 tokens, so the row is dropped. Report: 2 of 3 too long, 1 truncated, 1 dropped, 2 labels."""
    tok, fmt = _classifier()
    data, report = tokenize_stepwise(_rows(), tok, fmt, max_length=9)
    assert len(data) == 2 and "dropped_labels" not in data.column_names
    assert _tokens(tok, data[1]["input_ids"]) == ["<s>", *"cccc", "\n"]
    assert data[1]["labels"] == [-100] * 5 + [0]
    assert (report.n_too_long, report.n_truncated, report.n_dropped, report.n_dropped_labels) == (2, 1, 1, 2)
    assert report.message("train") == (
        "train: 2 of 3 rows (66.7%) exceed max_length=9 (longest 20 tokens): 1 lost left context (the prompt first, "
        "then whole oldest steps), losing 2 step labels with them, 1 that could not be truncated were dropped; "
        "2 rows kept"
    )


def test_last_step_only_loses_context_but_no_label():
    """Same rows with only the last step labelled: the cuts are the same, but the removed steps carried no label, so
    nothing is counted; row 2 (whose only step does not fit whole) is still dropped rather than cut inside it."""
    tok, fmt = _classifier()
    data, report = tokenize_stepwise(_rows(), tok, fmt, max_length=9, last_step_only=True)
    assert len(data) == 2 and data[1]["labels"] == [-100] * 5 + [0]
    assert (report.n_truncated, report.n_dropped, report.n_dropped_labels) == (1, 1, 0)
    assert "losing" not in report.message()


@pytest.mark.slow
def test_prm800k_rows_are_kept_by_dropping_leading_steps(shared_data):
    """PRM800K in TRL's stepwise format (every step labelled; rows are growing prefixes of a labeler's path), 512
    character tokens: most rows are longer. Rows used to be dropped whenever an early step's label could not be kept
    (329 of the first 800 here); now a row is dropped only when its last step alone does not fit, and every dropped
    label is counted."""
    rows = from_prm800k_stepwise_critic(shared_data / "prm800k/phase1_train.stepwise-critic.parquet", max_problems=20)
    rows = rows.select(range(800))
    tok, fmt = _classifier()
    encoded = [encode_steps(tok, fmt, r["prompt"], r["completions"]) for r in rows]
    fitted = [e.fit(512) for e in encoded]
    unfit = sum(f is None for f in fitted)
    assert unfit == sum(e.min_length() > 512 for e in encoded)
    data, report = tokenize_stepwise(rows, tok, fmt, max_length=512)
    assert report.n_too_long > 400 and report.n_dropped == unfit and len(data) == 800 - unfit
    assert report.n_dropped_labels == sum(f.n_dropped_steps for f in fitted if f is not None) > 0
    assert all(len(row["input_ids"]) <= 512 and row["labels"][-1] != -100 for row in data)
