"""OutcomeRewardTrainer on tiny models: both supervisions train (head included), the losses follow their formulas
(per-token scores checked against an independent forward), the completion mask token by token, over-long and
malformed rows, exact metrics, options, and save/reload (plain and LoRA) scoring identically with RewardScorer."""

import json
import math

import pytest
import torch
from datasets import Dataset
from transformers import DistilBertConfig, DistilBertForSequenceClassification

from trl_rewards.data.outcome_tokenization import encode_outcome
from trl_rewards.evaluation.verifier_metrics import outcome_metrics
from trl_rewards.inference.sequence_scoring import RewardScorer
from trl_rewards.modeling import load_reward_model
from trl_rewards.scripts.cli import main
from trl_rewards.testing import (
    save_tiny,
    tiny_bert_reward_model,
    tiny_bert_tokenizer,
    tiny_llama_reward_model,
    tiny_training_args,
)
from trl_rewards.trainers.orm_config import OutcomeRewardConfig
from trl_rewards.trainers.orm_trainer import OutcomeRewardTrainer

BUILD = {"llama": tiny_llama_reward_model, "bert": tiny_bert_reward_model}
HEADS = {"llama": "score", "bert": "classifier"}


def _rows(n=12):
    return Dataset.from_list(
        [{"prompt": f"Q{i}: {i}+1? ", "completion": f"A: {i + 1 + i % 2}", "label": i % 2 == 0} for i in range(n)]
    )


def _args(tmp_path, **kw):
    return tiny_training_args(OutcomeRewardConfig, tmp_path, **kw)


def _trainer(tmp_path, arch, train=None, eval_dataset=None, **kw):
    model, tok = BUILD[arch]()
    trainer = OutcomeRewardTrainer(
        model=model,
        args=_args(tmp_path, **kw),
        train_dataset=train if train is not None else _rows(),
        eval_dataset=eval_dataset,
        processing_class=tok,
    )
    return trainer, tok


def test_completion_mask_token_by_token():
    """One character per token. Decoder: `<s>` + prompt + completion + `</s>`: the completion and the eos (where the
    score is read) are supervised. Encoder: `[CLS]` + prompt + completion + `[SEP]`: the final `[SEP]` is not a
    completion token (the trainer adds the `[CLS]` read-out itself)."""
    _, llama_tok = tiny_llama_reward_model()
    ids, mask = encode_outcome(llama_tok, "Q: ", "ab", with_mask=True)
    assert llama_tok.convert_ids_to_tokens(ids) == ["<s>", "Q", ":", " ", "a", "b", "</s>"]
    assert mask == [0, 0, 0, 0, 1, 1, 1]
    bert_tok = tiny_bert_tokenizer()
    ids, mask = encode_outcome(bert_tok, "Q: ", "ab", with_mask=True)
    assert bert_tok.convert_ids_to_tokens(ids) == ["[CLS]", "Q", ":", " ", "a", "b", "[SEP]"]
    assert mask == [0, 0, 0, 0, 1, 1, 0]


@pytest.mark.parametrize("supervision", ["final_token", "all_tokens"])
@pytest.mark.parametrize("arch", ["llama", "bert"])
def test_trains_head_and_body(tmp_path, arch, supervision):
    trainer, _ = _trainer(tmp_path, arch, eval_dataset=_rows(6), supervision=supervision)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert losses and all(math.isfinite(loss) for loss in losses)
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.startswith(HEADS[arch]) for n in changed), "score head did not train"
    assert len(changed) > len(before) // 2
    metrics = trainer.evaluate()
    for key in ("eval_accuracy", "eval_auroc", "eval_ece", "eval_brier"):
        assert 0.0 <= metrics[key] <= 1.0, key


def _first_batch(trainer):
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    trainer.model.eval()
    return batch


@pytest.mark.parametrize("arch", ["llama", "bert"])
def test_final_token_loss_is_bce_on_stock_score(tmp_path, arch):
    trainer, _ = _trainer(tmp_path, arch)
    batch = _first_batch(trainer)
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch).item()
        scores = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0]
    expected = torch.nn.BCEWithLogitsLoss()(scores, batch["label"])
    assert loss == pytest.approx(expected.item(), abs=1e-6)


@pytest.mark.parametrize("arch", ["llama", "bert"])
def test_all_tokens_loss_matches_an_independent_per_token_forward(tmp_path, arch):
    """Per-token scores rebuilt without the trainer's hook: the decoder's `score` on the base model's last hidden
    state; the encoder's `classifier(tanh(pooler.dense(h)))`. The read-out token's score equals the stock score."""
    trainer, tok = _trainer(tmp_path, arch, supervision="all_tokens")
    batch = _first_batch(trainer)
    model = trainer.model
    ids, attention = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        loss = trainer.compute_loss(model, batch).item()
        stock = model(input_ids=ids, attention_mask=attention).logits[:, 0]
        if arch == "llama":
            hidden = model.model(input_ids=ids, attention_mask=attention).last_hidden_state
            token_scores = model.score(hidden)[..., 0]
            readout = attention.sum(1) - 1  # right padding: the last real token (the eos)
        else:
            hidden = model.bert(input_ids=ids, attention_mask=attention).last_hidden_state
            token_scores = model.classifier(model.bert.pooler.activation(model.bert.pooler.dense(hidden)))[..., 0]
            readout = torch.zeros(len(ids), dtype=torch.long)
    rows = torch.arange(len(ids))
    torch.testing.assert_close(token_scores[rows, readout], stock, atol=1e-5, rtol=0)
    mask = batch["completion_mask"].bool() & attention.bool()
    mask[rows, readout] = True
    per_token = torch.nn.functional.binary_cross_entropy_with_logits(
        token_scores, batch["label"][:, None].expand_as(token_scores), reduction="none"
    )
    expected = ((per_token * mask).sum(1) / mask.sum(1)).mean()
    assert loss == pytest.approx(expected.item(), abs=1e-5)


def test_all_tokens_rejects_heads_without_per_token_scores(tmp_path):
    tok = tiny_bert_tokenizer()
    config = DistilBertConfig(vocab_size=len(tok), dim=32, hidden_dim=64, n_layers=1, n_heads=2, num_labels=1)
    model = DistilBertForSequenceClassification(config)
    with pytest.raises(ValueError, match="supervision='all_tokens' supports decoders"):
        OutcomeRewardTrainer(
            model=model, args=_args(tmp_path, supervision="all_tokens"), train_dataset=_rows(), processing_class=tok
        )


def test_eval_metrics_are_exact_and_match_the_scorer(tmp_path):
    eval_rows = _rows(7)  # batch 4: the last batch is partial
    trainer, tok = _trainer(tmp_path, "llama", eval_dataset=eval_rows, max_steps=2)
    trainer.train()
    logged = trainer.evaluate()
    scores = RewardScorer(trainer.model, tok, batch_size=3).score(eval_rows["prompt"], eval_rows["completion"])
    expected = outcome_metrics(scores, eval_rows["label"])
    for key in ("accuracy", "auroc", "ece", "brier", "mean_score", "positive_rate"):
        assert logged[f"eval_{key}"] == pytest.approx(expected[key], abs=1e-5), key


def test_over_long_rows_and_malformed_rows(tmp_path):
    rows = Dataset.from_list(
        [
            {"prompt": "q ", "completion": "a", "label": True},  # 1 + 3 + 1 = 5 tokens
            {"prompt": "a long prompt ", "completion": "yes", "label": False},  # 19 tokens
        ]
    )
    trainer, tok = _trainer(tmp_path, "llama", train=rows, max_length=8)
    assert tok.convert_ids_to_tokens(trainer.train_dataset[1]["input_ids"]) == ["<s>", *"pt yes", "</s>"]
    assert trainer.length_reports["train"].n_truncated == 1
    trainer, _ = _trainer(tmp_path, "llama", train=rows, max_length=8, too_long="drop")
    assert len(trainer.train_dataset) == 1
    with pytest.raises(ValueError, match=r"1 rows exceed max_length=8; first is row 1 \(19 tokens\)"):
        _trainer(tmp_path, "llama", train=rows, max_length=8, too_long="error")
    bad = Dataset.from_list(
        [{"prompt": "q", "completion": "a", "label": 1}, {"prompt": "q", "completion": "b", "label": 0}]
    )
    with pytest.raises(ValueError, match=r'train row 0: "label" is 1 \(int\)'):
        _trainer(tmp_path, "llama", train=bad)
    empty = Dataset.from_list(
        [{"prompt": "q", "completion": "a", "label": True}, {"prompt": "q", "completion": " ", "label": True}]
    )
    with pytest.raises(ValueError, match='train row 1: "completion" must be a non-empty string'):
        _trainer(tmp_path, "llama", train=empty)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"supervision": "every_token"}, "supervision must be one of"),
        ({"too_long": "clip"}, "too_long must be one of"),
        ({"center_rewards_coefficient": 0.01}, "center_rewards_coefficient is not used"),
        ({"chat_template_path": "t.jinja"}, "chat_template_path is not used"),
        ({"calibration_bins": 0}, "calibration_bins must be >= 1"),
        ({"max_length": 1}, "max_length must be >= 2"),
    ],
)
def test_config_rejects_bad_values(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _args(tmp_path, **kwargs)


def test_saved_model_reloads_and_scores_identically(tmp_path):
    trainer, tok = _trainer(tmp_path, "bert", supervision="all_tokens")
    trainer.train()
    trainer.save_model(str(tmp_path / "saved"))
    rows = _rows(5)
    expected = RewardScorer(trainer.model, tok).score(rows["prompt"], rows["completion"])
    got = RewardScorer.from_pretrained(str(tmp_path / "saved")).score(rows["prompt"], rows["completion"])
    torch.testing.assert_close(torch.tensor(got), torch.tensor(expected), atol=1e-6, rtol=0)


def test_lora_adapter_reloads_and_scores_identically(tmp_path):
    import peft
    from transformers import AutoModelForSequenceClassification

    model, tok = tiny_llama_reward_model()
    save_tiny(model, tok, tmp_path / "base")
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "base")
    trainer = OutcomeRewardTrainer(
        model=model,
        args=_args(tmp_path, supervision="all_tokens"),
        train_dataset=_rows(),
        processing_class=tok,
        peft_config=peft.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"),  # task type set by the trainer
    )
    head = trainer.model.get_submodule("base_model.model.score").modules_to_save["default"]
    head_before = head.weight.detach().clone()
    trainer.train()
    assert not torch.equal(head.weight, head_before), "head was not trained under LoRA"
    trainer.save_model(str(tmp_path / "adapter"))
    rows = _rows(5)
    expected = RewardScorer(trainer.model, tok).score(rows["prompt"], rows["completion"])
    adapter, adapter_tok = load_reward_model(str(tmp_path / "adapter"))
    got = RewardScorer(adapter, adapter_tok).score(rows["prompt"], rows["completion"])
    torch.testing.assert_close(torch.tensor(got), torch.tensor(expected), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="peft_config.task_type must be 'SEQ_CLS'"):
        OutcomeRewardTrainer(
            model=AutoModelForSequenceClassification.from_pretrained(tmp_path / "base"),
            args=_args(tmp_path),
            train_dataset=_rows(),
            processing_class=tok,
            peft_config=peft.LoraConfig(task_type="CAUSAL_LM", r=2),
        )


def test_cli_train_orm(tmp_path):
    model, tok = tiny_llama_reward_model()
    base = save_tiny(model, tok, tmp_path / "base")
    data = tmp_path / "outcomes.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in _rows(8)))
    out = str(tmp_path / "orm")
    argv = ["train", "orm", "--model_name_or_path", base, "--dataset_name", str(data), "--eval_dataset_name",
            str(data), "--output_dir", out, "--supervision", "all_tokens", "--max_steps", "2", "--report_to",
            "none", "--save_strategy", "no", "--per_device_train_batch_size", "4"]  # fmt: skip
    assert main(argv) == 0
    assert len(RewardScorer.from_pretrained(out).score(["Q: 1+1? "], ["A: 2"])) == 1
