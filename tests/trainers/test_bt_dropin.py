"""BradleyTerryTrainer is a drop-in for trl.RewardTrainer: it takes streaming datasets, tool-call conversations with
`tools`, per-row `chat_template_kwargs`, TRL's legacy id columns and a plain `trl.RewardConfig`; NaN rewards stop
with a clear error; soft labels and all-tie logs are measured as documented."""

import json
import logging
import math
from dataclasses import fields

import pytest
import torch
from datasets import Dataset
from transformers import TrainingArguments
from trl import RewardConfig, RewardTrainer

from trl_rewards.testing import tiny_llama_reward_model, tiny_training_args
from trl_rewards.trainers.base import check_config
from trl_rewards.trainers.bt_config import BradleyTerryConfig
from trl_rewards.trainers.bt_trainer import BradleyTerryTrainer
from trl_rewards.trainers.orm_config import OutcomeRewardConfig
from trl_rewards.trainers.orm_trainer import OutcomeRewardTrainer


def _pairs(n=16, **extra):
    rows = [{"prompt": f"Q{i}: ", "chosen": "good " * (1 + i % 3), "rejected": "bad " * (1 + i % 4)} for i in range(n)]
    return Dataset.from_list([{**row, **extra} for row in rows])


def _args(tmp_path, **kw):
    return tiny_training_args(
        BradleyTerryConfig, tmp_path, **{"per_device_train_batch_size": 8, "per_device_eval_batch_size": 8, **kw}
    )


def _trainer(tmp_path, train, eval_dataset=None, model=None, **kw):
    model, tok = model or tiny_llama_reward_model()
    return BradleyTerryTrainer(
        model=model, args=_args(tmp_path, **kw), train_dataset=train, eval_dataset=eval_dataset, processing_class=tok
    )


def _losses(trainer):
    return [log["loss"] for log in trainer.state.log_history if "loss" in log]


# 1. Streaming datasets


def test_streaming_train_and_eval_sets(tmp_path):
    """A stream trains (with max_steps, as in TRL) and evaluates to exactly the metrics of the same rows as a
    map-style set; its length report counts the same truncations once the stream has been read."""
    model, tok = tiny_llama_reward_model()
    head = model.score.weight.detach().clone()
    trainer = _trainer(
        tmp_path,
        _pairs().to_iterable_dataset(),
        {"stream": _pairs(10).to_iterable_dataset(), "map": _pairs(10)},
        model=(model, tok),
        max_steps=2,
        max_length=12,
    )
    assert trainer.length_reports["stream"].n_rows == 0  # nothing read yet
    trainer.train()
    assert len(_losses(trainer)) == 2 and all(math.isfinite(loss) for loss in _losses(trainer))
    assert not torch.equal(model.score.weight, head)
    stream, mapped = trainer.evaluate(eval_dataset="stream"), trainer.evaluate(eval_dataset="map")
    for key in ("eval_accuracy", "eval_ece", "eval_mean_reward", "eval_tie_rate"):
        assert stream[key] == pytest.approx(mapped[key], abs=1e-6), key
    counts = [(r.n_rows, r.n_too_long, r.n_truncated) for r in (trainer.length_reports[k] for k in ("stream", "map"))]
    assert counts[0] == counts[1] and counts[0][1] > 0
    assert "read so far" in trainer.length_reports["stream"].message("stream")


def test_streaming_train_set_needs_max_steps(tmp_path):
    with pytest.raises(ValueError, match="max_steps"):
        _trainer(tmp_path, _pairs().to_iterable_dataset())


def test_streaming_train_set_without_eval_set_skips_reward_stats(tmp_path, caplog):
    """A training stream may be endless, so the reward statistics are not computed from it."""
    model, tok = tiny_llama_reward_model()
    trainer = _trainer(tmp_path, _pairs().to_iterable_dataset(), model=(model, tok), max_steps=1)
    with caplog.at_level(logging.WARNING, logger="trl_rewards.trainers.bt_trainer"):
        trainer.train()
    assert getattr(model.config, "reward_mean", None) is None
    assert any("reward statistics not stored" in r.getMessage() for r in caplog.records)


def test_streaming_bad_row_is_named_when_read(tmp_path):
    rows = _pairs(8).to_list()
    rows[5]["rejected"] = rows[5]["chosen"]
    trainer = _trainer(tmp_path, Dataset.from_list(rows).to_iterable_dataset(), max_steps=1)  # lazy: no error yet
    with pytest.raises(ValueError, match='train: row 5: "chosen" and "rejected" are identical'):
        trainer.train()


def test_orm_trains_on_a_stream_with_a_trl_reward_config(tmp_path):
    """The ORM shares the data path: a stream of outcome rows trains, and a trl.RewardConfig is converted."""
    model, tok = tiny_llama_reward_model()
    rows = [{"prompt": f"Q{i} ", "completion": "yes" if i % 2 else "no", "label": bool(i % 2)} for i in range(8)]
    args = RewardConfig(**_reward_config_kwargs(tmp_path, center_rewards_coefficient=None))  # the ORM refuses it
    trainer = OutcomeRewardTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(rows).to_iterable_dataset(), processing_class=tok
    )
    assert isinstance(trainer.args, OutcomeRewardConfig) and trainer.args.supervision == "final_token"
    trainer.train()
    assert _losses(trainer) and all(math.isfinite(loss) for loss in _losses(trainer))
    assert trainer.length_reports["train"].n_rows == 8


# 2-3. Tool calls, tools and chat_template_kwargs

TOOL_TEMPLATE = (
    "{% if tools %}<|system|>tools:{% for tool in tools %}{{ tool['function']['name'] }};{% endfor %}</s>{% endif %}"
    "{% for message in messages %}<|{{ message['role'] }}|>"
    "{% if message['content'] %}{{ message['content'] }}{% endif %}"
    "{% if message['tool_calls'] %}{% for call in message['tool_calls'] %}"
    "call {{ call['function']['name'] }}({{ call['function']['arguments'] }}){% endfor %}{% endif %}"
    "</s>{% endfor %}"
    "{% if enable_thinking is defined and not enable_thinking %}/no_think{% endif %}"
)
TOOLS = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]


def _tool_rows(tools):
    call = {"type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}
    return [
        {
            "prompt": [{"role": "user", "content": f"Weather {i}?"}],
            "chosen": [
                {"role": "assistant", "tool_calls": [call]},
                {"role": "tool", "content": "18C"},
                {"role": "assistant", "content": "It is 18C."},
            ],
            "rejected": [{"role": "assistant", "content": "No idea."}],
            "tools": tools,
            "chat_template_kwargs": {"enable_thinking": bool(i % 2)},
        }
        for i in range(4)
    ]


@pytest.mark.parametrize("as_json", [True, False], ids=["tools-json", "tools-list"])
def test_tool_calls_tools_and_template_kwargs_reach_the_template_as_in_trl(tmp_path, as_json):
    """
    Row 0 renders as `<|system|>tools:weather;</s><|user|>Weather 0?</s><|assistant|>call weather({"city": "Paris"})
    </s><|tool|>18C</s><|assistant|>It is 18C.</s>/no_think` (enable_thinking False); row 1 has no `/no_think`. The
    ids equal those TRL's own RewardTrainer builds from the same rows.
    """
    model, tok = tiny_llama_reward_model()
    tok.chat_template = TOOL_TEMPLATE
    train = Dataset.from_list(_tool_rows(json.dumps(TOOLS) if as_json else TOOLS))
    trainer = _trainer(tmp_path, train, model=(model, tok), max_steps=1)
    chosen = [tok.decode(ids) for ids in trainer.train_dataset["chosen_ids"]]
    assert chosen[0] == (
        '<|system|>tools:weather;</s><|user|>Weather 0?</s><|assistant|>call weather({"city": "Paris"})</s>'
        "<|tool|>18C</s><|assistant|>It is 18C.</s>/no_think"
    )
    assert not chosen[1].endswith("/no_think")
    trl_args = RewardConfig(**_reward_config_kwargs(tmp_path / "trl"))
    reference = RewardTrainer(model=model, args=trl_args, train_dataset=train, processing_class=tok).train_dataset
    assert trainer.train_dataset["chosen_ids"] == reference["chosen_ids"]
    assert trainer.train_dataset["rejected_ids"] == reference["rejected_ids"]
    trainer.train()
    assert all(math.isfinite(loss) for loss in _losses(trainer))


# 4. Legacy id columns


def test_legacy_input_ids_columns_are_accepted_with_one_warning(tmp_path):
    model, tok = tiny_llama_reward_model()
    rows = [
        {"chosen_input_ids": tok(f"good {i}")["input_ids"], "rejected_input_ids": tok(f"bad {i}")["input_ids"]}
        for i in range(8)
    ]
    with pytest.warns(FutureWarning, match="chosen_input_ids") as record:
        trainer = _trainer(tmp_path, Dataset.from_list(rows), model=(model, tok), max_steps=1)
    assert sum("chosen_input_ids" in str(w.message) for w in record) == 1
    assert trainer.train_dataset[3]["chosen_ids"] == rows[3]["chosen_input_ids"]
    trainer.train()
    assert all(math.isfinite(loss) for loss in _losses(trainer))


# 5. trl.RewardConfig


def _reward_config_kwargs(tmp_path, **overrides):
    return (
        dict(
            output_dir=str(tmp_path / "out"),
            per_device_train_batch_size=8,
            learning_rate=5e-3,
            max_steps=2,
            logging_steps=1,
            report_to=[],
            save_strategy="no",
            bf16=False,  # TRL's default (True) is refused on a CPU by transformers itself
            activation_checkpointing=False,
            lr_scheduler_type="constant",
            center_rewards_coefficient=0.01,
            seed=0,
        )
        | overrides
    )


def test_trl_reward_config_is_converted(tmp_path, caplog):
    """Every field of the RewardConfig is carried over, ours take their defaults, one info log says so."""
    args = RewardConfig(**_reward_config_kwargs(tmp_path))
    converted = check_config(args, BradleyTerryConfig, "unused")
    assert type(converted) is BradleyTerryConfig
    for f in fields(RewardConfig):
        if f.init:
            assert getattr(converted, f.name) == getattr(args, f.name), f.name
    assert (converted.too_long, converted.tie_policy, converted.label_smoothing) == ("truncate", "loss", 0.0)
    model, tok = tiny_llama_reward_model()
    caplog.clear()  # the direct check_config call above logs too when an earlier test set the level to INFO
    with caplog.at_level(logging.INFO, logger="trl_rewards.trainers.base"):
        trainer = BradleyTerryTrainer(model=model, args=args, train_dataset=_pairs(), processing_class=tok)
    notes = [r.getMessage() for r in caplog.records if "converted to BradleyTerryConfig" in r.getMessage()]
    assert len(notes) == 1 and "tie_policy='loss'" in notes[0]
    trainer.train()
    assert len(_losses(trainer)) == 2 and all(math.isfinite(loss) for loss in _losses(trainer))


def test_check_config_converts_the_trl_parent_only(tmp_path):
    args = RewardConfig(**_reward_config_kwargs(tmp_path, center_rewards_coefficient=None))
    converted = check_config(args, OutcomeRewardConfig, "unused")
    assert type(converted) is OutcomeRewardConfig and converted.learning_rate == 5e-3
    plain = TrainingArguments(str(tmp_path / "out"), activation_checkpointing=False, report_to=[])
    with pytest.raises(TypeError, match="args must be a BradleyTerryConfig or a trl.RewardConfig, got TrainingArgum"):
        check_config(plain, BradleyTerryConfig, "unused")


# 6. Non-finite rewards


def test_nan_rewards_raise_a_clear_error(tmp_path):
    """A NaN embedding for "x", which only the rejected texts contain, makes every rejected reward NaN."""
    model, tok = tiny_llama_reward_model()
    with torch.no_grad():
        model.model.embed_tokens.weight[tok.convert_tokens_to_ids("x")] = float("nan")
    rows = [{"chosen": f"good {i}", "rejected": f"bad x{i}"} for i in range(8)]
    trainer = _trainer(tmp_path, Dataset.from_list(rows), model=(model, tok), max_steps=1)
    match = r"non-finite rewards .* at step 0 \(train\): 8 of 8 rejected sequences.*learning rate too high.*fp16"
    with pytest.raises(FloatingPointError, match=match):
        trainer.train()


# 7. Soft labels in the metrics


def test_buffered_metrics_read_the_label(tmp_path):
    """
    chosen [2, 0, 1, 3], rejected [0, 2, 1, 1], label [1, 0, 0.5, 0.9]:
    pair 0 right (2 > 0, chosen wins); pair 1 right (0 < 2, rejected wins); pair 2 a tie; pair 3 right (0.9 > 0.5).
    ties="loss": 3/4. Ignoring the labels would give 2/4.
    ECE: q = sigmoid(2) = 0.880797 for pairs 0, 1 (confidence of "rejected") and 3, in bin (0.85, 0.9], with
    correctness 1, 1 - 0 = 1 and 0.9; pair 2: q = 0.5, bin [0.5, 0.55], correctness 0.
    ECE = (|2.9 - 3 * 0.880797| + |0 - 0.5|) / 4 = 0.189402.
    """
    trainer = _trainer(tmp_path, _pairs(8), max_steps=1)
    buffered = {
        "chosen": [torch.tensor([2.0, 0.0, 1.0, 3.0])],
        "rejected": [torch.tensor([0.0, 2.0, 1.0, 1.0])],
        "label": [torch.tensor([1.0, 0.0, 0.5, 0.9])],
    }
    out = trainer._buffered_metrics(buffered)
    assert out["accuracy"] == pytest.approx(0.75)
    assert out["ece"] == pytest.approx((abs(2.9 - 3 / (1 + math.exp(-2))) + 0.5) / 4, abs=1e-6)
    assert out["tie_rate"] == pytest.approx(0.25)


def test_eval_accuracy_follows_flipped_labels(tmp_path):
    """The same pairs labelled 0 (rejected is better) score 1 - the accuracy with label 1 (no ties)."""
    trainer = _trainer(tmp_path, _pairs(8), {"one": _pairs(10, label=1.0), "zero": _pairs(10, label=0.0)}, max_steps=1)
    one, zero = trainer.evaluate(eval_dataset="one"), trainer.evaluate(eval_dataset="zero")
    assert one["eval_tie_rate"] == 0.0
    assert zero["eval_accuracy"] == pytest.approx(1 - one["eval_accuracy"])


# 8. All ties under tie_policy="exclude"


def test_all_ties_under_exclude_log_nan_and_warn_once(tmp_path, caplog):
    """A zero reward head ties every pair at step 1: accuracy NaN, tie rate 1, training goes on."""
    model, tok = tiny_llama_reward_model()
    with torch.no_grad():
        model.score.weight.zero_()
    trainer = _trainer(tmp_path, _pairs(16), model=(model, tok), max_steps=2, tie_policy="exclude")
    with caplog.at_level(logging.WARNING, logger="trl_rewards.trainers.bt_trainer"):
        trainer.train()
        ties = {"chosen": [torch.zeros(3)], "rejected": [torch.zeros(3)], "label": [torch.ones(3)]}
        again = trainer._buffered_metrics(ties)
    first = next(log for log in trainer.state.log_history if "accuracy" in log)
    assert math.isnan(first["accuracy"]) and first["tie_rate"] == 1.0
    assert math.isnan(again["accuracy"])
    assert sum("tie_policy='exclude'" in r.getMessage() for r in caplog.records) == 1
    assert all(math.isfinite(loss) for loss in _losses(trainer))
