"""ProcessRewardTrainer on tiny models: label positions token by token (both styles), over-long and malformed rows,
training (head included), exact metrics, the loss formula, options, and save/reload (plain and LoRA) with identical
step scores."""

import json
import math

import pytest
import torch
from datasets import Dataset
from transformers import LlamaForCausalLM

from trl_rewards.data.collators import StepCollator
from trl_rewards.evaluation.verifier_metrics import step_metrics
from trl_rewards.inference.step_scoring import ProcessRewardScorer
from trl_rewards.scripts.cli import main
from trl_rewards.testing import (
    save_tiny,
    tiny_bert_token_classifier,
    tiny_llama_config,
    tiny_llama_token_classifier,
    tiny_llama_tokenizer,
    tiny_training_args,
)
from trl_rewards.trainers.prm_config import ProcessRewardConfig
from trl_rewards.trainers.prm_trainer import ProcessRewardTrainer

TAG = "<|prm_label|>"


def _rows(n=12):
    rows = []
    for i in range(n):
        steps = [f"{i}+1={i + 1}", f"x{i % 3}", "done"][: 1 + i % 3]
        labels = [True, i % 2 == 0, i % 4 == 0][: len(steps)]
        rows.append({"prompt": f"Q{i}: ", "completions": steps, "labels": labels})
    return Dataset.from_list(rows)


def _args(tmp_path, **kw):
    return tiny_training_args(ProcessRewardConfig, tmp_path, **kw)


def _causal_lm(seed=0):
    tok = tiny_llama_tokenizer()
    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_llama_config(tok)), tok


def _model(kind):
    """(model, tokenizer, config overrides) for the three set-ups under test."""
    if kind == "llama-classifier":
        return (*tiny_llama_token_classifier(), {})
    if kind == "bert-classifier":
        return (*tiny_bert_token_classifier(), {"step_separator": "[SEP]"})
    return (*_causal_lm(), {"model_style": "lm"})


def _trainer(tmp_path, kind, train=None, eval_dataset=None, **kw):
    model, tok, overrides = _model(kind)
    trainer = ProcessRewardTrainer(
        model=model,
        args=_args(tmp_path, **{**overrides, **kw}),
        train_dataset=train if train is not None else _rows(),
        eval_dataset=eval_dataset,
        processing_class=tok,
    )
    return trainer, tok


ONE_ROW = Dataset.from_list([{"prompt": "Q:", "completions": ["1+1=2", "x"], "labels": [True, False]}])


def _tokens_and_labels(trainer, tok):
    row = trainer.train_dataset[0]
    return tok.convert_ids_to_tokens(row["input_ids"]), row["labels"]


def test_label_positions_classifier_decoder_token_by_token(tmp_path):
    """Step 1 ends at the `\\n` after "1+1=2" (index 8, good = 1), step 2 at the final `\\n` (index 10, bad = 0)."""
    trainer, tok = _trainer(tmp_path, "llama-classifier", train=ONE_ROW)
    tokens, labels = _tokens_and_labels(trainer, tok)
    assert tokens == ["<s>", "Q", ":", "1", "+", "1", "=", "2", "\n", "x", "\n"]
    assert labels == [-100, -100, -100, -100, -100, -100, -100, -100, 1, -100, 0]


def test_label_positions_classifier_encoder_token_by_token(tmp_path):
    """With `[SEP]` as the step separator, each label sits on the `[SEP]` after its step; the tokenizer's own final
    `[SEP]` (index 7) carries none."""
    rows = Dataset.from_list([{"prompt": "Q:", "completions": ["a", "b"], "labels": [False, True]}])
    trainer, tok = _trainer(tmp_path, "bert-classifier", train=rows)
    tokens, labels = _tokens_and_labels(trainer, tok)
    assert tokens == ["[CLS]", "Q", ":", "a", "[SEP]", "b", "[SEP]", "[SEP]"]
    assert labels == [-100, -100, -100, -100, 0, -100, 1, -100]


def test_label_positions_lm_token_by_token(tmp_path):
    """lm style: the tag follows each step and carries its label; the separator comes after the tag."""
    trainer, tok = _trainer(tmp_path, "lm", train=ONE_ROW)
    tokens, labels = _tokens_and_labels(trainer, tok)
    assert tokens == ["<s>", "Q", ":", "1", "+", "1", "=", "2", TAG, "\n", "x", TAG, "\n"]
    assert labels == [-100, -100, -100, -100, -100, -100, -100, -100, 1, -100, -100, 0, -100]
    assert trainer.model.get_input_embeddings().num_embeddings == len(tok)  # resized for the new tag
    assert trainer.model.config.process_reward_format["step_tag"] == TAG


def test_collator_pads_labels_with_ignore_index():
    batch = StepCollator(pad_token_id=0, pad_to_multiple_of=4)(
        [{"input_ids": [5, 6, 7], "labels": [-100, 1, 0]}, {"input_ids": [8], "labels": [1]}]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0], [8, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 1, 0, -100], [1, -100, -100, -100]]


def test_last_step_only_options_are_independent(tmp_path):
    trainer, _ = _trainer(
        tmp_path, "llama-classifier", train=ONE_ROW, eval_dataset=ONE_ROW, train_on_last_step_only=True
    )
    assert [y for y in trainer.train_dataset[0]["labels"] if y != -100] == [0]
    assert [y for y in trainer.eval_dataset[0]["labels"] if y != -100] == [1, 0]
    trainer, _ = _trainer(
        tmp_path, "llama-classifier", train=ONE_ROW, eval_dataset=ONE_ROW, eval_on_last_step_only=True
    )
    assert [y for y in trainer.train_dataset[0]["labels"] if y != -100] == [1, 0]
    assert [y for y in trainer.eval_dataset[0]["labels"] if y != -100] == [0]


def test_over_long_rows_cut_from_the_left_or_dropped(tmp_path):
    rows = Dataset.from_list(
        [
            {"prompt": "short", "completions": ["a"], "labels": [True]},  # 1 + 5 + 2 = 8 tokens
            {"prompt": "a much longer prompt", "completions": ["b"], "labels": [False]},  # 23 tokens
            {"prompt": "p", "completions": ["a", "a long step here"], "labels": [True, True]},  # 21 tokens
        ]
    )
    trainer, tok = _trainer(tmp_path, "llama-classifier", train=rows, max_length=10)
    report = trainer.length_reports["train"]
    assert (report.n_too_long, report.n_truncated, report.n_dropped, report.longest) == (2, 1, 1, 23)
    assert "1 lost left context (the prompt first, then whole oldest steps), 1 that could not" in report.message()
    assert len(trainer.train_dataset) == 2
    kept = trainer.train_dataset[1]  # <s>, the last 7 prompt characters, the step and its separator with the label
    assert tok.convert_ids_to_tokens(kept["input_ids"]) == ["<s>", *" prompt", "b", "\n"]
    assert kept["labels"] == [-100] * 9 + [0]

    # Cuts fall on step boundaries only: row 2's last step alone needs 18 tokens (<s>, 16 characters, separator), so
    # within 10 it is dropped, even when only the last step is labelled (it used to keep "tep here" with its label).
    trainer, tok = _trainer(tmp_path, "llama-classifier", train=rows, max_length=10, train_on_last_step_only=True)
    assert len(trainer.train_dataset) == 2 and trainer.length_reports["train"].n_dropped == 1
    trainer, tok = _trainer(tmp_path, "llama-classifier", train=rows, max_length=18, train_on_last_step_only=True)
    kept = trainer.train_dataset[2]  # the prompt and step 1 went whole; step 2 keeps all its text
    assert tok.convert_ids_to_tokens(kept["input_ids"]) == ["<s>", *"a long step here", "\n"]
    assert kept["labels"] == [-100] * 17 + [1]

    trainer, _ = _trainer(tmp_path, "llama-classifier", train=rows, max_length=10, too_long="drop")
    assert len(trainer.train_dataset) == 1 and trainer.length_reports["train"].n_dropped == 2
    with pytest.raises(ValueError, match="2 rows exceed max_length=10; first is row 1 \\(23 tokens\\)"):
        _trainer(tmp_path, "llama-classifier", train=rows, max_length=10, too_long="error")


@pytest.mark.parametrize(
    "bad_row, message",
    [
        (
            {"prompt": "q", "completions": ["a", "b"], "labels": [True]},
            '"labels" has 1 entries but "completions" has 2',
        ),
        ({"prompt": "q", "completions": ["a", " "], "labels": [True, True]}, r'"completions"\[1\] is empty'),
        ({"prompt": "q", "completions": [], "labels": []}, '"completions" has no steps'),
        ({"prompt": "q", "completions": ["a"], "labels": [1]}, r'"labels"\[0\] is 1 \(int\)'),
        ({"prompt": " ", "completions": ["a"], "labels": [True]}, '"prompt" must be a non-empty string'),
    ],
)
def test_malformed_rows_fail_with_row_and_field(tmp_path, bad_row, message):
    good = {"prompt": "q", "completions": ["a"], "labels": [True]}
    # Arrow cannot hold int and bool labels in one column: the int-label row goes alone (row 0).
    rows = [bad_row] if bad_row["labels"] and type(bad_row["labels"][0]) is int else [good, bad_row]
    model, tok = tiny_llama_token_classifier()
    with pytest.raises(ValueError, match=f"train row {len(rows) - 1}: {message}"):
        ProcessRewardTrainer(
            model=model, args=_args(tmp_path), train_dataset=Dataset.from_list(rows), processing_class=tok
        )


HEADS = {"llama-classifier": "score", "bert-classifier": "classifier", "lm": "lm_head"}


@pytest.mark.parametrize("kind", ["llama-classifier", "bert-classifier", "lm"])
def test_trains_head_and_body_and_logs_step_metrics(tmp_path, kind):
    trainer, _ = _trainer(tmp_path, kind, eval_dataset=_rows(6))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert losses and all(math.isfinite(loss) for loss in losses)
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.startswith(HEADS[kind]) for n in changed), "head did not train"
    assert len(changed) > len(before) // 2
    metrics = trainer.evaluate()
    for key in ("eval_step_accuracy", "eval_bad_f1", "eval_first_error_accuracy", "eval_bad_step_rate"):
        assert 0.0 <= metrics[key] <= 1.0, key


@pytest.mark.parametrize("kind", ["llama-classifier", "lm"])
def test_eval_metrics_are_exact_over_the_eval_set(tmp_path, kind):
    """The logged metrics equal those computed from the scorer's step probabilities of every eval row (7 rows, batch
    4: the last batch is partial)."""
    eval_rows = _rows(7)
    trainer, tok = _trainer(tmp_path, kind, eval_dataset=eval_rows, max_steps=2)
    trainer.train()
    logged = trainer.evaluate()
    scorer = ProcessRewardScorer(trainer.model, tok, batch_size=3)
    probs = scorer.step_probabilities(eval_rows["prompt"], eval_rows["completions"])
    expected = step_metrics(probs, eval_rows["labels"])
    for key in ("step_accuracy", "first_error_accuracy", "bad_step_rate", "bad_recall"):
        assert logged[f"eval_{key}"] == pytest.approx(expected[key], abs=1e-9), key
    assert logged["eval_bad_f1"] == pytest.approx(expected["bad_f1"], nan_ok=True)


@pytest.mark.parametrize("kind", ["llama-classifier", "lm"])
def test_loss_is_cross_entropy_over_good_bad_at_label_positions(tmp_path, kind):
    trainer, tok = _trainer(tmp_path, kind)
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    trainer.model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch).item()
        logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    if kind == "lm":  # [z_bad, z_good] = logits of "-" and "+"
        logits = logits[..., [tok.convert_tokens_to_ids("-"), tok.convert_tokens_to_ids("+")]]
    mask = batch["labels"] != -100
    expected = torch.nn.functional.cross_entropy(logits[mask], batch["labels"][mask])
    assert loss == pytest.approx(expected.item(), abs=1e-6)


@pytest.mark.parametrize("kind", ["llama-classifier", "lm"])
def test_loss_is_the_mean_over_the_global_batch_whatever_the_micro_batches(tmp_path, kind):
    """8 rows a step as 1 x 8 or as 4 accumulated micro-batches of 2: rows have 1 to 3 steps, so a mean of
    micro-batch means would differ; the loss is the mean over every labelled step of the global batch."""
    runs = {}
    for micro, accumulation in ((8, 1), (2, 4)):
        trainer, _ = _trainer(
            tmp_path / f"{micro}",
            kind,
            train=_rows(24),
            per_device_train_batch_size=micro,
            gradient_accumulation_steps=accumulation,
            train_sampling_strategy="sequential",
        )
        trainer.train()
        runs[micro] = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(runs[8]) == 3
    assert runs[2] == pytest.approx(runs[8], abs=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"model_style": "rm"}, "model_style must be one of"),
        ({"step_tag": "<t>"}, "step_tag is used only with model_style='lm'"),
        ({"model_style": "lm", "good_token": "+", "bad_token": "+"}, "good_token and bad_token must differ"),
        ({"model_style": "lm", "step_tag": "+"}, "step_tag '\\+' must differ"),
        ({"step_separator": ""}, "step_separator must not be empty"),
        ({"too_long": "clip"}, "too_long must be one of"),
        ({"max_length": 1}, "max_length must be >= 2"),
        ({"step_threshold": 1.0}, r"step_threshold must lie in \(0, 1\)"),
        ({"pad_to_multiple_of": 0}, "pad_to_multiple_of must be >= 1"),
    ],
)
def test_config_rejects_bad_values(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _args(tmp_path, **kwargs)


def test_model_must_match_style(tmp_path):
    model, tok = tiny_llama_token_classifier(num_labels=3)
    with pytest.raises(ValueError, match="num_labels=2"):
        ProcessRewardTrainer(model=model, args=_args(tmp_path), train_dataset=_rows(), processing_class=tok)
    model, tok = tiny_llama_token_classifier()
    with pytest.raises(ValueError, match="model_style='lm' needs a causal LM"):
        ProcessRewardTrainer(
            model=model, args=_args(tmp_path, model_style="lm"), train_dataset=_rows(), processing_class=tok
        )
    model, tok = _causal_lm()
    with pytest.raises(ValueError, match="good_token '\\+\\+' must be a single token"):
        ProcessRewardTrainer(
            model=model,
            args=_args(tmp_path, model_style="lm", good_token="++"),
            train_dataset=_rows(),
            processing_class=tok,
        )


def _scores(model, tok, rows):
    return ProcessRewardScorer(model, tok).step_probabilities(rows["prompt"], rows["completions"])


@pytest.mark.parametrize("kind", ["bert-classifier", "lm"])
def test_saved_model_reloads_and_scores_identically(tmp_path, kind):
    trainer, tok = _trainer(tmp_path, kind)
    trainer.train()
    trainer.save_model(str(tmp_path / "saved"))
    rows = _rows(5)
    expected = _scores(trainer.model, tok, rows)
    reloaded = ProcessRewardScorer.from_pretrained(str(tmp_path / "saved"))
    assert reloaded.format == trainer.process_format  # the layout travels in the saved config
    got = reloaded.step_probabilities(rows["prompt"], rows["completions"])
    for a, b in zip(expected, got, strict=True):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", ["llama-classifier", "lm"])
def test_lora_adapter_reloads_and_scores_identically(tmp_path, kind):
    import peft

    model, tok, overrides = _model(kind)
    save_tiny(model, tok, tmp_path / "base")  # the adapter records where its base lives
    model = type(model).from_pretrained(tmp_path / "base")
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear")  # task type set by the trainer
    trainer = ProcessRewardTrainer(
        model=model,
        args=_args(tmp_path, learning_rate=5e-2, **overrides),
        train_dataset=_rows(),
        processing_class=tok,
        peft_config=lora,
    )
    if kind == "lm":
        tag_id = tok.convert_tokens_to_ids(TAG)
        assert trainer.model.peft_config["default"].trainable_token_indices == {"embed_tokens": [tag_id]}
        before = trainer.model.get_input_embeddings()(torch.tensor([tag_id])).detach().clone()
    else:
        head = trainer.model.get_submodule("base_model.model.score").modules_to_save["default"]
        before = head.weight.detach().clone()
    trainer.train()
    after = trainer.model.get_input_embeddings()(torch.tensor([tag_id])) if kind == "lm" else head.weight
    assert not torch.equal(before, after.detach()), "tag embedding / head was not trained under LoRA"
    trainer.save_model(str(tmp_path / "adapter"))
    assert json.loads((tmp_path / "adapter" / "process_reward.json").read_text())["model_style"] == (
        "lm" if kind == "lm" else "classifier"
    )
    rows = _rows(5)
    expected = _scores(trainer.model, tok, rows)
    got = ProcessRewardScorer.from_pretrained(str(tmp_path / "adapter")).step_probabilities(
        rows["prompt"], rows["completions"]
    )
    for a, b in zip(expected, got, strict=True):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=1e-6, rtol=0)
    # `trl-rewards merge` recognises the PRM adapter: a plain model with the same step layout and scores
    main(["merge", str(tmp_path / "adapter"), str(tmp_path / "merged")])
    merged = ProcessRewardScorer.from_pretrained(str(tmp_path / "merged"))
    assert not merged.model.__class__.__name__.startswith("Peft")
    assert merged.format == trainer.process_format
    for a, b in zip(expected, merged.step_probabilities(rows["prompt"], rows["completions"]), strict=True):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=1e-5, rtol=0)


def test_peft_task_type_must_match_style(tmp_path):
    import peft

    model, tok = tiny_llama_token_classifier()
    with pytest.raises(ValueError, match="peft_config.task_type must be 'TOKEN_CLS'"):
        ProcessRewardTrainer(
            model=model,
            args=_args(tmp_path),
            train_dataset=_rows(),
            processing_class=tok,
            peft_config=peft.LoraConfig(task_type="SEQ_CLS", r=2, target_modules="all-linear"),
        )


def test_cli_train_prm_lm_style(tmp_path):
    model, tok = _causal_lm()
    base = save_tiny(model, tok, tmp_path / "base")
    data = tmp_path / "steps.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in _rows(8)))
    out = str(tmp_path / "prm")
    argv = ["train", "prm", "--model_name_or_path", base, "--dataset_name", str(data), "--eval_dataset_name",
            str(data), "--output_dir", out, "--model_style", "lm", "--max_steps", "2", "--report_to", "none",
            "--save_strategy", "no", "--per_device_train_batch_size", "4",
            "--train_on_last_step_only", "true"]  # fmt: skip
    assert main(argv) == 0
    scorer = ProcessRewardScorer.from_pretrained(out)
    assert scorer.format["model_style"] == "lm" and len(scorer.step_probabilities(["Q"], [["a", "b"]])[0]) == 2
