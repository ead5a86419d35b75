"""The metric buffering every trainer shares (`trainers/base.py`), checked on all three trainers at once: a fix made
there holds for each of them."""

import math

import pytest
from datasets import Dataset

from trl_rewards.testing import (
    tiny_llama_reward_model,
    tiny_llama_token_classifier,
    tiny_training_args,
)
from trl_rewards.trainers.bt_config import BradleyTerryConfig
from trl_rewards.trainers.bt_trainer import BradleyTerryTrainer
from trl_rewards.trainers.orm_config import OutcomeRewardConfig
from trl_rewards.trainers.orm_trainer import OutcomeRewardTrainer
from trl_rewards.trainers.prm_config import ProcessRewardConfig
from trl_rewards.trainers.prm_trainer import ProcessRewardTrainer


def _pairs(n):
    return [{"prompt": f"Q{i}: ", "chosen": "good " * (1 + i % 3), "rejected": "bad " * (1 + i % 4)} for i in range(n)]


def _outcomes(n):
    return [{"prompt": f"Q{i}: {i}+1? ", "completion": f"A: {i + 1 + i % 2}", "label": i % 2 == 0} for i in range(n)]


def _steps(n):
    rows = []
    for i in range(n):
        steps = [f"{i}+1={i + 1}", f"x{i % 3}", "done"][: 1 + i % 3]
        rows.append(
            {"prompt": f"Q{i}: ", "completions": steps, "labels": [True, i % 2 == 0, i % 4 == 0][: len(steps)]}
        )
    return rows


KINDS = {
    "bt": (BradleyTerryTrainer, BradleyTerryConfig, tiny_llama_reward_model, _pairs),
    "orm": (OutcomeRewardTrainer, OutcomeRewardConfig, tiny_llama_reward_model, _outcomes),
    "prm": (ProcessRewardTrainer, ProcessRewardConfig, tiny_llama_token_classifier, _steps),
}


def _trainer(kind, tmp_path, n_train=8, n_eval=8):
    trainer_cls, config_cls, build, rows = KINDS[kind]
    model, tokenizer = build()
    return trainer_cls(
        model=model,
        args=tiny_training_args(config_cls, tmp_path, max_steps=2),
        train_dataset=Dataset.from_list(rows(n_train)),
        eval_dataset=Dataset.from_list(rows(n_eval)),
        processing_class=tokenizer,
    )


@pytest.mark.parametrize("kind", list(KINDS))
def test_no_0d_tensor_is_gathered(tmp_path, kind):
    """gloo's all_gather (every CPU multi-process run) rejects 0-d tensors. The token count was gathered 0-d by the
    ORM trainer (the fix lived in the BT and PRM copies only); now one code path gathers for all three."""
    trainer = _trainer(kind, tmp_path)
    shapes = []
    for name in ("gather", "gather_for_metrics"):
        original = getattr(trainer.accelerator, name)

        def checked(tensor, *args, _original=original, **kwargs):
            if hasattr(tensor, "dim"):
                shapes.append(tuple(tensor.shape))
                assert tensor.dim() >= 1, "a 0-d tensor reached all_gather"
            return _original(tensor, *args, **kwargs)

        setattr(trainer.accelerator, name, checked)
    trainer.train()
    trainer.evaluate()
    assert (1,) in shapes  # the token count, gathered as a 1-element tensor
    assert trainer.state.log_history[0]["num_tokens"] > 0


@pytest.mark.parametrize("kind", list(KINDS))
def test_predict_does_not_leak_into_the_next_evaluation(tmp_path, kind):
    """`predict` buffers outputs but never logs them; the next `evaluate` must report the eval set alone (the guard
    existed in the PRM trainer only)."""
    trainer = _trainer(kind, tmp_path)
    before = trainer.evaluate()
    trainer.predict(trainer.eval_dataset.select(range(3)))
    after = trainer.evaluate()
    timing = ("runtime", "per_second", "preparation_time")
    compared = {k: v for k, v in before.items() if not any(t in k for t in timing)}
    assert len(compared) >= 3
    for key, value in compared.items():
        assert after[key] == pytest.approx(value, abs=1e-9) or (math.isnan(value) and math.isnan(after[key])), key


@pytest.mark.parametrize("kind", list(KINDS))
def test_metrics_cover_the_whole_eval_set(tmp_path, kind):
    """Evaluation metrics are computed once over every eval example (not averaged over batches of 4): an eval set
    of 7 gives the same figures whatever `per_device_eval_batch_size` is."""
    results = []
    for batch_size in (2, 7):
        trainer = _trainer(kind, tmp_path / str(batch_size), n_eval=7)
        trainer.args.per_device_eval_batch_size = batch_size
        results.append(trainer.evaluate())
    keys = [
        k
        for k in results[0]
        if k.startswith("eval_") and not any(t in k for t in ("runtime", "per_second", "preparation_time", "loss"))
    ]
    assert len(keys) >= 3
    for key in keys:
        assert results[0][key] == pytest.approx(results[1][key], abs=1e-5), key


@pytest.mark.parametrize("kind", list(KINDS))
def test_max_length_is_clamped_to_the_model_positions(tmp_path, kind, caplog):
    """The configs default to max_length=1024; the tiny models read 512 positions. A row longer than 512 tokens used
    to crash the first batch holding it ("The expanded size of the tensor ... must match ... 512"); the trainer now
    lowers max_length to 512 (one warning) and the long row is truncated like any other over-long row."""
    trainer_cls, config_cls, build, rows = KINDS[kind]
    model, tokenizer = build()
    data = rows(4)
    if kind == "bt":
        data[0]["chosen"] = "x" * 700
    elif kind == "orm":
        data[0]["completion"] = "x" * 700
    else:
        data[0]["completions"] = ["x" * 300, "y" * 400]
        data[0]["labels"] = [True, False]
    args = tiny_training_args(config_cls, tmp_path, max_steps=1)
    assert args.max_length == 1024
    with caplog.at_level("WARNING"):
        trainer = trainer_cls(
            model=model, args=args, train_dataset=Dataset.from_list(data), processing_class=tokenizer
        )
    assert trainer.args.max_length == 512 and "exceeds the 512 positions" in caplog.text
    assert max(trainer.train_dataset["length"]) <= 512
    trainer.train()
