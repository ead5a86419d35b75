"""BradleyTerryTrainer on tiny models: it trains (head included), logs exact metrics, honours every option, and
the saved model (full, adapter or merged) reloads with the same scores."""

import math

import pytest
import torch
from datasets import Dataset

from trl_rewards.inference.sequence_scoring import RewardScorer
from trl_rewards.merge import merge_adapter
from trl_rewards.modeling import load_reward_model
from trl_rewards.testing import save_tiny, tiny_bert_reward_model, tiny_llama_reward_model, tiny_training_args
from trl_rewards.trainers.bt_config import BradleyTerryConfig
from trl_rewards.trainers.bt_trainer import BradleyTerryTrainer

HEADS = {"llama": "score", "bert": "classifier"}


def _pairs(n=16, **extra):
    rows = [{"prompt": f"Q{i}: ", "chosen": "good " * (1 + i % 3), "rejected": "bad " * (1 + i % 4)} for i in range(n)]
    for row in rows:
        row.update(extra)
    return Dataset.from_list(rows)


def _args(tmp_path, **kw):
    return tiny_training_args(
        BradleyTerryConfig, tmp_path, **{"per_device_train_batch_size": 8, "per_device_eval_batch_size": 8, **kw}
    )


@pytest.mark.parametrize("arch", ["llama", "bert"])
def test_trains_head_and_body(tmp_path, arch):
    model, tok = (tiny_llama_reward_model if arch == "llama" else tiny_bert_reward_model)()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = BradleyTerryTrainer(
        model=model, args=_args(tmp_path), train_dataset=_pairs(), eval_dataset=_pairs(8), processing_class=tok
    )
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert losses and all(math.isfinite(loss) for loss in losses)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.startswith(HEADS[arch]) for n in changed), "reward head did not train"
    assert len(changed) > len(before) // 2
    # metrics of the final eval cover every eval pair
    metrics = trainer.evaluate()
    for key in ("eval_accuracy", "eval_tie_rate", "eval_margin", "eval_ece", "eval_mean_reward", "eval_std_reward"):
        assert math.isfinite(metrics[key]), key
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0


def test_eval_metrics_match_scorer_over_whole_eval_set(tmp_path):
    """The logged accuracy and reward mean equal those computed independently from every eval pair's scores."""
    from trl_rewards.evaluation import metrics as m

    model, tok = tiny_llama_reward_model()
    eval_set = _pairs(10)  # not a multiple of the batch size: the last batch is partial
    trainer = BradleyTerryTrainer(
        model=model,
        args=_args(tmp_path, max_steps=2),
        train_dataset=_pairs(),
        eval_dataset=eval_set,
        processing_class=tok,
    )
    trainer.train()
    logged = trainer.evaluate()
    scorer = RewardScorer(model, tok, batch_size=3)
    chosen, rejected = scorer.score_pairs(*(eval_set.to_dict()[k] for k in ("prompt", "chosen", "rejected")))
    assert logged["eval_accuracy"] == pytest.approx(m.pairwise_accuracy(chosen, rejected), abs=1e-9)
    assert logged["eval_mean_reward"] == pytest.approx(sum(chosen + rejected) / 20, abs=1e-5)
    assert logged["eval_ece"] == pytest.approx(m.pairwise_calibration_error(chosen, rejected), abs=1e-5)


def test_reward_stats_stored_in_config_and_saved(tmp_path):
    model, tok = tiny_llama_reward_model()
    trainer = BradleyTerryTrainer(
        model=model, args=_args(tmp_path), train_dataset=_pairs(), eval_dataset=_pairs(6), processing_class=tok
    )
    trainer.train()
    scorer = RewardScorer(model, tok)
    ev = _pairs(6).to_dict()
    scores = torch.tensor(scorer.score(ev["prompt"] * 2, ev["chosen"] + ev["rejected"]), dtype=torch.float64)
    assert model.config.reward_mean == pytest.approx(scores.mean().item(), abs=1e-5)
    assert model.config.reward_std == pytest.approx(scores.std(unbiased=False).item(), abs=1e-5)
    assert model.config.reward_stats_source == "eval"
    trainer.save_model(str(tmp_path / "saved"))
    reloaded, _ = load_reward_model(str(tmp_path / "saved"))
    assert reloaded.config.reward_mean == pytest.approx(model.config.reward_mean)
    normalized = RewardScorer(reloaded, tok, normalize=True).score(ev["prompt"], ev["chosen"])
    expected = (scores[:6] - model.config.reward_mean) / model.config.reward_std
    torch.testing.assert_close(torch.tensor(normalized, dtype=torch.float64), expected, atol=1e-4, rtol=0)


def _first_step_loss(tmp_path, dataset, **config):
    model, tok = tiny_llama_reward_model()
    trainer = BradleyTerryTrainer(
        model=model,
        args=_args(tmp_path, max_steps=1, learning_rate=1e-12, **config),
        train_dataset=dataset,
        processing_class=tok,
    )
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(model, batch).item()
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
    chosen, rejected = logits.chunk(2)
    return loss, chosen.double(), rejected.double()


def test_options_are_honoured_in_the_loss(tmp_path):
    """Margin, soft label, label smoothing and centering each change the loss exactly as the formula says."""
    loss, c, r = _first_step_loss(tmp_path, _pairs(8))
    d = c - r
    assert loss == pytest.approx((-torch.nn.functional.logsigmoid(d)).mean().item(), abs=1e-6)

    loss, c, r = _first_step_loss(tmp_path, _pairs(8, margin=0.3))
    assert loss == pytest.approx((-torch.nn.functional.logsigmoid(c - r - 0.3)).mean().item(), abs=1e-6)

    loss, c, r = _first_step_loss(tmp_path, _pairs(8, label=0.7), label_smoothing=0.1)
    p = 0.7 * 0.9 + 0.3 * 0.1
    d = c - r
    expected = -(p * torch.nn.functional.logsigmoid(d) + (1 - p) * torch.nn.functional.logsigmoid(-d))
    assert loss == pytest.approx(expected.mean().item(), abs=1e-6)

    loss, c, r = _first_step_loss(tmp_path, _pairs(8), center_rewards_coefficient=0.5)
    expected = (-torch.nn.functional.logsigmoid(c - r)).mean() + 0.5 * ((c + r) ** 2).mean()
    assert loss == pytest.approx(expected.item(), abs=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"too_long": "clip"}, "too_long must be one of"),
        ({"tie_policy": "draw"}, "tie_policy must be one of"),
        ({"label_smoothing": 0.5}, r"label_smoothing must lie in \[0, 0.5\)"),
        ({"center_rewards_coefficient": -1.0}, "center_rewards_coefficient must be >= 0"),
        ({"calibration_bins": 0}, "calibration_bins must be >= 1"),
        ({"max_length": 1}, "max_length must be >= 2"),
    ],
)
def test_config_rejects_bad_values(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _args(tmp_path, **kwargs)


def test_bf16_defaults_off_on_cpu(tmp_path):
    assert _args(tmp_path).bf16 is (torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def test_bad_rows_fail_before_training(tmp_path):
    model, tok = tiny_llama_reward_model()
    rows = [{"chosen": "a", "rejected": "b"}, {"chosen": "same", "rejected": "same"}]
    with pytest.raises(ValueError, match='row 1: "chosen" and "rejected" are identical'):
        BradleyTerryTrainer(
            model=model, args=_args(tmp_path), train_dataset=Dataset.from_list(rows), processing_class=tok
        )


def test_length_grouped_batches(tmp_path):
    """With group_by_length, TRL's sampler reads our `length` column: every batch has similar lengths."""
    model, tok = tiny_llama_reward_model()
    rows = [{"chosen": "x" * n, "rejected": "y"} for n in [1, 40, 2, 41, 3, 42, 4, 43]]
    trainer = BradleyTerryTrainer(
        model=model,
        args=_args(tmp_path, per_device_train_batch_size=4, train_sampling_strategy="group_by_length"),
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
    )
    widths = sorted(batch["input_ids"].shape[1] for batch in trainer.get_train_dataloader())
    assert widths == [6, 45]  # short rows padded together, long rows together


@pytest.mark.parametrize("arch", ["llama", "bert"])
def test_lora_adapter_and_merged_reload_with_same_scores(tmp_path, arch):
    import peft
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model, tok = (tiny_llama_reward_model if arch == "llama" else tiny_bert_reward_model)()
    save_tiny(model, tok, tmp_path / "base")  # the adapter records where its base lives, as with a Hub model
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "base")
    lora = peft.LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules="all-linear")
    trainer = BradleyTerryTrainer(
        model=model,
        args=_args(tmp_path),
        train_dataset=_pairs(),
        eval_dataset=_pairs(4),
        processing_class=tok,
        peft_config=lora,
    )
    head_before = trainer.model.get_submodule(f"base_model.model.{HEADS[arch]}").modules_to_save["default"]
    head_weight = head_before.weight.detach().clone()
    trainer.train()
    assert not torch.equal(head_before.weight, head_weight), "head was not trained under LoRA"
    adapter_dir, merged_dir = str(tmp_path / "adapter"), str(tmp_path / "merged")
    trainer.save_model(adapter_dir)

    ev = _pairs(5).to_dict()
    expected = RewardScorer(trainer.model, tok).score(ev["prompt"], ev["chosen"])
    adapter_model, adapter_tok = load_reward_model(adapter_dir)
    torch.testing.assert_close(
        RewardScorer(adapter_model, adapter_tok).score(ev["prompt"], ev["chosen"]), expected, atol=1e-5, rtol=0
    )
    assert adapter_model.config.reward_mean == pytest.approx(trainer.model.config.reward_mean)
    merge_adapter(adapter_dir, merged_dir)
    plain = AutoModelForSequenceClassification.from_pretrained(merged_dir)  # no trl_rewards needed to load it
    torch.testing.assert_close(
        RewardScorer(plain, AutoTokenizer.from_pretrained(merged_dir)).score(ev["prompt"], ev["chosen"]),
        expected,
        atol=1e-5,
        rtol=0,
    )
