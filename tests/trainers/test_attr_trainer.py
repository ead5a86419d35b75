"""AttributeRewardTrainer on tiny models: it trains (head included) with missing ratings masked, logs exact
per-attribute metrics and the combined pairwise accuracy, writes a stock regression head and its statistics, and the
saved model (full or LoRA adapter) reloads with the same scores; config checks and the `train attr` command."""

import json
import math

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForSequenceClassification
from trl import RewardConfig

from trl_rewards.evaluation.attribute_metrics import attribute_metrics, combined_pairwise_accuracy
from trl_rewards.inference.attribute_scoring import AttributeScorer
from trl_rewards.scripts.cli import main
from trl_rewards.testing import (
    save_tiny,
    tiny_bert_config,
    tiny_bert_tokenizer,
    tiny_llama_config,
    tiny_llama_tokenizer,
    tiny_training_args,
)
from trl_rewards.trainers.attr_config import AttributeRewardConfig
from trl_rewards.trainers.attr_trainer import AttributeRewardTrainer

ATTRS = ["quality", "length"]
HEADS = {"llama": "score", "bert": "classifier"}


def _model(arch="llama", k=2, seed=0):
    tokenizer = tiny_llama_tokenizer() if arch == "llama" else tiny_bert_tokenizer()
    config = (tiny_llama_config if arch == "llama" else tiny_bert_config)(tokenizer, num_labels=k)
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_config(config), tokenizer


def _rows(n=12, missing=True):
    rows = []
    for i in range(n):
        quality = None if missing and i % 4 == 1 else float(i % 5)
        rows.append({"prompt": f"Q{i}: ", "completion": "ab" * (1 + i % 3), "quality": quality, "length": 1.0 + i % 3})
    return Dataset.from_list(rows)


def _pairs(n=6):
    return Dataset.from_list(
        [{"prompt": f"Q{i}: ", "chosen": "abab" + "c" * (1 + i % 2), "rejected": "ab" * (1 + i % 3)} for i in range(n)]
    )


def _args(tmp_path, **kw):
    return tiny_training_args(AttributeRewardConfig, tmp_path, attributes=ATTRS, **kw)


def _trainer(tmp_path, arch="llama", train=None, eval_dataset=None, **kw):
    model, tokenizer = _model(arch)
    trainer = AttributeRewardTrainer(
        model=model,
        args=_args(tmp_path, **kw),
        train_dataset=train if train is not None else _rows(),
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
    )
    return trainer, tokenizer


@pytest.mark.parametrize("arch", ["llama", "bert"])
def test_trains_head_and_body_with_missing_ratings(tmp_path, arch):
    trainer, _ = _trainer(tmp_path, arch)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert losses and all(math.isfinite(loss) for loss in losses)  # a NaN rating leaking in would make it NaN
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.startswith(HEADS[arch]) for n in changed), "attribute head did not train"
    assert len(changed) > len(before) // 2


def test_missing_rating_gives_no_gradient_to_its_output(tmp_path):
    """A batch whose `quality` ratings are all missing trains only the `length` output of the head: the head row of
    `quality` gets an exactly-zero gradient, while the loss, and the other row, are those of the observed ratings."""
    trainer, _ = _trainer(tmp_path)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in (1, 5)])  # rows 1 and 5: quality missing
    assert torch.isnan(batch["ratings"][:, 0]).all()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    grad = trainer.model.score.weight.grad
    assert torch.count_nonzero(grad[0]) == 0 and torch.count_nonzero(grad[1]) > 0
    with torch.no_grad():
        scores = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert loss.item() == pytest.approx(torch.mean((scores[:, 1] - batch["ratings"][:, 1]) ** 2).item(), rel=1e-5)


def test_eval_metrics_match_scorer_over_whole_eval_set(tmp_path):
    eval_rows = _rows(10)  # not a multiple of the batch size: the last batch is partial
    trainer, tokenizer = _trainer(tmp_path, eval_dataset=eval_rows, max_steps=2)
    trainer.preference_eval_dataset = None
    trainer.train()
    logged = trainer.evaluate()
    scores = AttributeScorer(trainer.model, tokenizer, batch_size=3).score_attributes(
        eval_rows["prompt"], eval_rows["completion"]
    )
    ratings = np.array(
        [[np.nan if q is None else q, ln] for q, ln in zip(eval_rows["quality"], eval_rows["length"], strict=True)]
    )
    expected = attribute_metrics(scores, ratings, ATTRS)
    for key in ("quality/mae", "quality/pearson", "quality/spearman", "length/mae", "mae", "mse"):
        assert logged[f"eval_{key}"] == pytest.approx(expected[key], abs=1e-5), key
    assert logged["eval_quality/count"] == 7 and logged["eval_length/count"] == 10  # 3 missing quality ratings


def test_pairwise_accuracy_of_combined_reward(tmp_path):
    model, tokenizer = _model()
    pairs = _pairs(7)
    trainer = AttributeRewardTrainer(
        model=model,
        args=_args(tmp_path, attribute_weights=[1.0, -0.5], max_steps=2, per_device_eval_batch_size=3),
        train_dataset=_rows(),
        eval_dataset=_rows(4),
        processing_class=tokenizer,
        preference_eval_dataset=pairs,
    )
    trainer.train()
    logged = trainer.evaluate()
    scorer = AttributeScorer(trainer.model, tokenizer)
    chosen = scorer.score_attributes(pairs["prompt"], pairs["chosen"])
    rejected = scorer.score_attributes(pairs["prompt"], pairs["rejected"])
    expected = combined_pairwise_accuracy(chosen, rejected, [1.0, -0.5])
    assert logged["eval_pairwise_accuracy"] == expected["pairwise_accuracy"]
    assert logged["eval_pairwise_margin"] == pytest.approx(expected["pairwise_margin"], abs=1e-5)
    assert logged["eval_pairwise_count"] == 7
    assert scorer.score(pairs["prompt"], pairs["chosen"]) == pytest.approx((chosen @ [1.0, -0.5]).tolist())


def test_saved_model_is_a_stock_regression_head_with_statistics(tmp_path):
    trainer, tokenizer = _trainer(tmp_path, eval_dataset=_rows(6), attribute_weights=[2.0, 1.0])
    trainer.train()
    path = tmp_path / "saved"
    trainer.save_model(str(path))
    tokenizer.save_pretrained(path)
    config = json.loads((path / "config.json").read_text())
    assert config["problem_type"] == "regression" and config["id2label"] == {"0": "quality", "1": "length"}
    assert config["attribute_weights"] == [2.0, 1.0] and config["attribute_stats_source"] == "eval"
    plain = AutoModelForSequenceClassification.from_pretrained(path)  # loads without our package
    assert plain.config.num_labels == 2
    rows = _rows(6)
    scores = AttributeScorer(trainer.model, tokenizer).score_attributes(rows["prompt"], rows["completion"])
    assert config["attribute_means"] == pytest.approx(scores.mean(0).tolist(), abs=1e-5)
    assert config["attribute_stds"] == pytest.approx(scores.std(0).tolist(), abs=1e-5)
    reloaded = AttributeScorer.from_pretrained(str(path), normalize=True)
    assert reloaded.attributes == ATTRS and reloaded.weights.tolist() == [2.0, 1.0]
    z = reloaded.score_attributes(rows["prompt"], rows["completion"])
    assert z.mean(0) == pytest.approx([0, 0], abs=1e-4) and z.std(0) == pytest.approx([1, 1], abs=1e-4)


def test_lora_adapter_reloads_with_the_same_scores(tmp_path):
    import peft

    model, tokenizer = _model()
    base = tmp_path / "base"
    save_tiny(model, tokenizer, base)
    trainer = AttributeRewardTrainer(
        model=AutoModelForSequenceClassification.from_pretrained(base),
        args=_args(tmp_path),
        train_dataset=_rows(),
        processing_class=tokenizer,
        peft_config=peft.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"),
    )
    trainer.train()
    adapter = tmp_path / "adapter"
    trainer.save_model(str(adapter))
    stats = json.loads((adapter / "reward_stats.json").read_text())
    assert stats["attribute_names"] == ATTRS and len(stats["attribute_means"]) == 2
    rows = _rows(5)
    expected = AttributeScorer(trainer.model, tokenizer).score_attributes(rows["prompt"], rows["completion"])
    reloaded = AttributeScorer.from_pretrained(str(adapter))
    assert reloaded.attributes == ATTRS
    np.testing.assert_allclose(reloaded.score_attributes(rows["prompt"], rows["completion"]), expected, atol=1e-5)


def test_model_and_config_errors(tmp_path):
    model, tokenizer = _model(k=3)
    with pytest.raises(ValueError, match="num_labels=3 but there are 2 attributes"):
        AttributeRewardTrainer(model=model, args=_args(tmp_path), train_dataset=_rows(), processing_class=tokenizer)
    with pytest.raises(ValueError, match="attribute_weights has 1 values"):
        _args(tmp_path, attribute_weights=[1.0])
    with pytest.raises(ValueError, match="all 0"):
        _args(tmp_path, attribute_weights=[0.0, 0.0])
    with pytest.raises(ValueError, match="distinct"):
        tiny_training_args(AttributeRewardConfig, tmp_path, attributes=["a", "a"])
    with pytest.raises(ValueError, match="center_rewards_coefficient"):
        _args(tmp_path, center_rewards_coefficient=0.01)


def test_accepts_a_trl_reward_config_and_names_bad_rows(tmp_path):
    model, tokenizer = _model(k=5)  # HelpSteer2's five attributes by default
    args = RewardConfig(str(tmp_path / "out"), report_to=[], max_steps=1, bf16=False, activation_checkpointing=False)
    rows = [
        {"prompt": "p", "completion": "c", "helpfulness": 2, "verbosity": None},
        {"prompt": "p", "completion": "c"},
    ]
    with pytest.raises(ValueError, match="train row 1: no rating at all"):
        AttributeRewardTrainer(
            model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer
        )


def test_train_attr_command(tmp_path, capsys):
    model, tokenizer = _model(k=2)
    base = save_tiny(model, tokenizer, tmp_path / "base")
    data = tmp_path / "rows.jsonl"
    data.write_text("\n".join(json.dumps(row) for row in _rows(8)) + "\n")
    common = ["train", "attr", "--model_name_or_path", base, "--dataset_name", str(data), "--attributes", *ATTRS]
    options = ["--max_steps", "2", "--per_device_train_batch_size", "4", "--report_to", "none", "--bf16", "false"]
    main([*common, "--output_dir", str(tmp_path / "out"), *options])
    saved = AttributeScorer.from_pretrained(str(tmp_path / "out"))
    assert saved.attributes == ATTRS and saved.model.config.problem_type == "regression"
    with open(data, "a") as f:
        f.write(json.dumps({"prompt": "p", "completion": "c", "quality": "high", "length": 1}) + "\n")
    with pytest.raises(ValueError, match=r"train data .*row 8: \"quality\" must be a number"):
        main([*common, "--output_dir", str(tmp_path / "out2"), *options])


def test_train_attr_qlora_adapter_reloads_and_merges(tmp_path):
    """`train attr --load_in_4bit --use_peft` on CPU (as every trainer, tests/test_modeling.py): the 2-output head is
    trained in fp32 and saved with the adapter, which reloads (fp32 base) with its attribute names and merges into a
    plain model that scores the same."""
    import bitsandbytes  # noqa: F401  (the `quantization` extra, always installed by ./dev: missing fails here)

    from trl_rewards.merge import merge_adapter

    tokenizer = tiny_llama_tokenizer()
    torch.manual_seed(0)
    config = tiny_llama_config(tokenizer, num_labels=2, hidden_size=64, intermediate_size=128)
    base = save_tiny(AutoModelForSequenceClassification.from_config(config), tokenizer, tmp_path / "base")
    data = tmp_path / "rows.jsonl"
    data.write_text("\n".join(json.dumps(row) for row in _rows(8)) + "\n")
    adapter = tmp_path / "adapter"
    main(
        ["train", "attr", "--model_name_or_path", base, "--dataset_name", str(data), "--attributes", *ATTRS]
        + ["--output_dir", str(adapter), "--max_steps", "2", "--per_device_train_batch_size", "4"]
        + ["--learning_rate", "1e-2", "--report_to", "none", "--bf16", "false", "--gradient_checkpointing", "false"]
        + ["--load_in_4bit", "--dtype", "float32", "--use_peft", "--lora_r", "4"]
        + ["--lora_target_modules", "q_proj", "v_proj"]
    )
    assert (adapter / "adapter_config.json").is_file()
    on_fp32_base = AttributeScorer.from_pretrained(str(adapter))
    assert on_fp32_base.attributes == ATTRS
    trained_head = on_fp32_base.model.base_model.model.score.modules_to_save["default"].weight
    initial_head = AutoModelForSequenceClassification.from_pretrained(base).score.weight
    assert trained_head.dtype == torch.float32 and not torch.equal(trained_head, initial_head)
    rows = _rows(4)
    expected = on_fp32_base.score_attributes(rows["prompt"], rows["completion"])
    merged = merge_adapter(str(adapter), str(tmp_path / "merged"), num_labels=2)
    plain = AttributeScorer.from_pretrained(merged)
    assert plain.attributes == ATTRS and plain.model.config.problem_type == "regression"
    np.testing.assert_allclose(plain.score_attributes(rows["prompt"], rows["completion"]), expected, atol=1e-5)


def test_head_bias_starts_at_the_mean_ratings(tmp_path):
    """BERT's classifier has a bias: it starts at each attribute's mean observed rating on the train set (quality:
    i % 5 for the 9 rows i in 0..11 with i % 4 != 1: i = 0,2,3,4,6,7,8,10,11 -> 0,2,3,4,1,2,3,0,1 -> 16/9; length:
    the mean of 1 + i % 3 over 0..11 = 2). Llama's `score` has none and is left as is. `init_head_bias=False` keeps
    the initial bias."""
    rows = _rows(12)
    trainer, _ = _trainer(tmp_path, "bert", train=rows)
    assert trainer.model.classifier.bias.tolist() == pytest.approx([16 / 9, 2.0])
    untouched, _ = _trainer(tmp_path, "bert", train=rows, init_head_bias=False)
    assert untouched.model.classifier.bias.tolist() == [0.0, 0.0]
    llama, _ = _trainer(tmp_path, "llama", train=rows)
    assert llama.model.score.bias is None
