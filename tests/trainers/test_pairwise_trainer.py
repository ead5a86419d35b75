"""PairwisePreferenceTrainer on tiny models: it trains (head included) on both orders of every pair, logs exact
metrics, honours its options, saves a model (full or adapter) that scores the same after reloading, and learns a
synthetic preference that it fails to learn when its read-out is one token off."""

import math
import random

import numpy as np
import pytest
import torch
from datasets import Dataset
from trl import RewardConfig

import trl_rewards.data.pairwise as pairwise
from trl_rewards.evaluation.pairwise_eval import pairwise_preference_metrics
from trl_rewards.inference.pairwise_scoring import PairwiseScorer
from trl_rewards.losses import pairwise_preference_loss
from trl_rewards.modeling import load_reward_model
from trl_rewards.testing import save_tiny, tiny_bert_reward_model, tiny_llama_reward_model, tiny_training_args
from trl_rewards.trainers.pairwise_config import PairwisePreferenceConfig
from trl_rewards.trainers.pairwise_trainer import PairwisePreferenceTrainer

HEADS = {"llama": "score", "bert": "classifier"}
MODELS = {"llama": tiny_llama_reward_model, "bert": tiny_bert_reward_model}


def _pairs(n=16, **extra):
    rows = [{"prompt": f"Q{i}: ", "chosen": "good " * (1 + i % 3), "rejected": "bad " * (1 + i % 4)} for i in range(n)]
    for row in rows:
        row.update(extra)
    return Dataset.from_list(rows)


def _args(tmp_path, **kw):
    return tiny_training_args(
        PairwisePreferenceConfig, tmp_path, **{"per_device_train_batch_size": 8, "per_device_eval_batch_size": 8, **kw}
    )


@pytest.mark.parametrize("arch", ["llama", "bert"])
def test_trains_head_and_body_on_both_orders(tmp_path, arch):
    model, tok = MODELS[arch]()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = PairwisePreferenceTrainer(
        model=model, args=_args(tmp_path), train_dataset=_pairs(), eval_dataset=_pairs(8), processing_class=tok
    )
    row = trainer.train_dataset[0]
    assert set(trainer.train_dataset.column_names) >= {"ab_ids", "ba_ids", "label"} and row["ab_ids"] != row["ba_ids"]
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert losses and all(math.isfinite(loss) for loss in losses)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.startswith(HEADS[arch]) for n in changed), "head did not train"
    assert len(changed) > len(before) // 2
    metrics = trainer.evaluate()
    for key in ("accuracy", "position_consistency", "position_bias", "ece", "brier", "win_probability"):
        assert math.isfinite(metrics[f"eval_{key}"]), key


def test_eval_metrics_are_those_of_every_eval_pair(tmp_path):
    """The logged metrics equal `pairwise_preference_metrics` on the scorer's logits of the whole eval set (10
    pairs: the last batch is partial)."""
    model, tok = tiny_llama_reward_model(seed=1)
    eval_set = _pairs(10, label=0.75)
    trainer = PairwisePreferenceTrainer(
        model=model,
        args=_args(tmp_path, max_steps=2),
        train_dataset=_pairs(),
        eval_dataset=eval_set,
        processing_class=tok,
    )
    trainer.train()
    logged = trainer.evaluate()
    ab, ba = PairwiseScorer(trainer.model, tok).order_logits(
        eval_set["prompt"], eval_set["chosen"], eval_set["rejected"]
    )
    expected = pairwise_preference_metrics(ab, ba, eval_set["label"])
    for key in ("accuracy", "position_consistency", "position_bias", "ece", "brier", "win_probability"):
        assert logged[f"eval_{key}"] == pytest.approx(expected[key], abs=1e-5), key


def test_loss_honours_labels_and_label_smoothing(tmp_path):
    """compute_loss = pairwise_preference_loss(l_AB, l_BA, target) with target = p (1 - ε) + (1 - p) ε."""
    model, tok = tiny_bert_reward_model(seed=2)
    trainer = PairwisePreferenceTrainer(
        model=model,
        args=_args(tmp_path, label_smoothing=0.1),
        train_dataset=_pairs(4, label=0.8),
        processing_class=tok,
    )
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(model, batch)
        ab, ba = (
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1).chunk(2)
        )
    target = torch.full_like(ab, 0.8 * 0.9 + 0.2 * 0.1)
    torch.testing.assert_close(loss, pairwise_preference_loss(ab, ba, target=target))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"label_smoothing": 0.5}, "label_smoothing"),
        ({"center_rewards_coefficient": 0.01}, "center_rewards_coefficient"),
        ({"too_long": "cut"}, "too_long"),
        ({"calibration_bins": 0}, "calibration_bins"),
    ],
)
def test_config_rejects_bad_values(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _args(tmp_path, **kwargs)


def test_accepts_trl_reward_config_and_refuses_bad_rows(tmp_path):
    model, tok = tiny_bert_reward_model()
    config = RewardConfig(
        str(tmp_path / "out"),
        report_to=[],
        max_steps=1,
        per_device_train_batch_size=4,
        bf16=False,  # TRL's default (True) is refused on a CPU by transformers itself
        activation_checkpointing=False,
    )
    trainer = PairwisePreferenceTrainer(model=model, args=config, train_dataset=_pairs(4), processing_class=tok)
    assert isinstance(trainer.args, PairwisePreferenceConfig) and trainer.args.max_length == 512
    with pytest.raises(ValueError, match="margin"):
        PairwisePreferenceTrainer(
            model=model, args=_args(tmp_path), train_dataset=_pairs(4, margin=1.0), processing_class=tok
        )


def test_lora_adapter_reloads_with_same_win_probabilities(tmp_path):
    import peft
    from transformers import AutoModelForSequenceClassification

    model, tok = tiny_llama_reward_model()
    save_tiny(model, tok, tmp_path / "base")
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "base")
    lora = peft.LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules="all-linear")
    trainer = PairwisePreferenceTrainer(
        model=model, args=_args(tmp_path), train_dataset=_pairs(), processing_class=tok, peft_config=lora
    )
    trainer.train()
    trainer.save_model(str(tmp_path / "adapter"))
    ev = _pairs(5).to_dict()
    expected = PairwiseScorer(trainer.model, tok).win_probability(ev["prompt"], ev["chosen"], ev["rejected"])
    reloaded = PairwiseScorer(*load_reward_model(str(tmp_path / "adapter")))
    assert reloaded.win_probability(ev["prompt"], ev["chosen"], ev["rejected"]) == pytest.approx(expected, abs=1e-5)


# ------------------------------------------------------------------------------------------------ learnability
# As in tests/trainers/test_learnability.py: each answer is six random letters and a marker (`Y` good, `N` bad), the
# only difference between the two responses; the model must find which of the two positions holds the `Y`.

BAR, CHANCE_CEILING = 0.95, 0.8
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _marker_pairs(n, seed):
    rng = random.Random(seed)
    word = lambda k: "".join(rng.choice(LETTERS) for _ in range(k))  # noqa: E731
    return Dataset.from_list(
        [{"prompt": word(3) + ":", "chosen": word(6) + "Y", "rejected": word(6) + "N"} for _ in range(n)]
    )


def _held_out_accuracy(tmp_path, max_steps=30):
    model, tok = tiny_llama_reward_model(seed=0)
    args = _args(
        tmp_path,
        per_device_train_batch_size=16,
        lr_scheduler_type="constant",
        logging_steps=1000,
        disable_tqdm=True,
        learning_rate=5e-3,
        max_steps=max_steps,
    )
    trainer = PairwisePreferenceTrainer(
        model=model, args=args, train_dataset=_marker_pairs(320, 1), processing_class=tok
    )
    trainer.train()
    test = _marker_pairs(100, 2)
    wins = PairwiseScorer(trainer.model, tok).win_probability(test["prompt"], test["chosen"], test["rejected"])
    return float(np.mean(np.array(wins) > 0.5))


def test_learns_which_response_holds_the_marker(tmp_path):
    """Held-out accuracy of the debiased win probability, read by `PairwiseScorer` at the decoder's last token (the
    eos closing the template)."""
    assert _held_out_accuracy(tmp_path) >= BAR


def test_one_token_off_stays_near_chance(tmp_path, monkeypatch):
    """Trained without the closing eos, so its read-out is the last response's marker, one token before the eos at
    which `PairwiseScorer` reads (the scorer's own encoding is untouched)."""
    encode = pairwise.encode_pair_orders

    def without_eos(tokenizer, *args, **kwargs):
        ids = encode(tokenizer, *args, **kwargs)
        return ids._replace(ab=ids.ab[:-1], ba=ids.ba[:-1])

    monkeypatch.setattr(pairwise, "encode_pair_orders", without_eos)
    assert _held_out_accuracy(tmp_path) < CHANCE_CEILING


def test_qlora_trains_head_in_fp32_and_reloads(tmp_path):
    """A 4-bit nf4 body + LoRA on CPU, as `train pairwise --load_in_4bit --use_peft` builds it: the head trains in
    fp32, and the adapter reloaded on a 4-bit base holds exactly the trained weights."""
    import bitsandbytes  # noqa: F401  (the `quantization` extra, always installed by ./dev: missing fails here)
    from trl import ModelConfig

    from trl_rewards.modeling import reward_peft_config

    base = save_tiny(*tiny_llama_reward_model(hidden_size=64, intermediate_size=128), tmp_path / "base")
    model_args = ModelConfig(
        load_in_4bit=True, dtype="float32", use_peft=True, lora_r=4, lora_target_modules=["q_proj", "v_proj"]
    )
    qmodel, tok = load_reward_model(base, model_args=model_args)
    assert qmodel.is_loaded_in_4bit
    args = _args(tmp_path, max_steps=2, learning_rate=1e-2, per_device_train_batch_size=4)
    trainer = PairwisePreferenceTrainer(
        model=qmodel.train(),
        args=args,
        train_dataset=_pairs(8),
        processing_class=tok,
        peft_config=reward_peft_config(model_args),
    )
    head = trainer.model.base_model.model.score.modules_to_save["default"].weight
    before = head.detach().clone()
    trainer.train()
    assert head.dtype == torch.float32 and not torch.equal(before, head.detach())
    trainer.save_model(str(tmp_path / "adapter"))
    reloaded, rtok = load_reward_model(
        str(tmp_path / "adapter"), model_args=ModelConfig(load_in_4bit=True, dtype="float32")
    )
    restored = reloaded.state_dict()
    trained = {k: v for k, v in trainer.model.state_dict().items() if "lora_" in k or "modules_to_save" in k}
    assert trained and all(torch.equal(v.float(), restored[k].float()) for k, v in trained.items())
    assert 0 < PairwiseScorer(reloaded, rtok).win_probability(["Q: "], ["good"], ["bad"])[0] < 1
