"""BradleyTerryTrainer with `prefix_sharing=True`: rewards, loss and gradients equal the plain path (fp32, tiny
Llama- and Qwen2-style decoders), training matches it step for step (gradient accumulation, LoRA), lengths are packed
lengths, and encoders or unsupported attention kernels are rejected with a clear error."""

import random

import numpy as np
import pytest
import torch
from datasets import Dataset

from trl_rewards.data.prefix_sharing import packed_length
from trl_rewards.inference.sequence_scoring import RewardScorer
from trl_rewards.testing import (
    tiny_bert_reward_model,
    tiny_llama_reward_model,
    tiny_qwen2_reward_model,
    tiny_training_args,
)
from trl_rewards.trainers.bt_config import BradleyTerryConfig
from trl_rewards.trainers.bt_trainer import BradleyTerryTrainer

TOL = dict(atol=1e-5, rtol=1e-5)

CASES = {
    # no prompt at all: the packed row is chosen + rejected, both starting at position 0 (the tokenizer's `<s>` is the
    # only shared token, so pre-tokenized ids are used to share nothing)
    "empty_prompt": [
        {"chosen_ids": [5, 20, 21, 2], "rejected_ids": [6, 22, 2]},
        {"chosen_ids": [7, 2], "rejected_ids": [8, 9, 10, 2]},
    ],
    "long_prompt": [
        {"prompt": "A long question that takes more tokens than both answers: ", "chosen": "yes", "rejected": "no"},
        {"prompt": "Another prompt, again much longer than what follows it. ", "chosen": "ok!", "rejected": "nah"},
    ],
    "mixed_lengths": [
        {"prompt": "Q: ", "chosen": "a fairly long chosen answer here", "rejected": "short"},
        {"prompt": "A medium sized prompt? ", "chosen": "x", "rejected": "a rejected answer, longer"},
        {"prompt": "P ", "chosen": "same start, then A", "rejected": "same start, then B"},
        {"prompt": "The longest prompt of the batch, by a wide margin: ", "chosen": "c", "rejected": "rr"},
    ],
}


MODELS = {"llama": tiny_llama_reward_model, "qwen2": tiny_qwen2_reward_model}


def _args(tmp_path, **kw):
    return tiny_training_args(BradleyTerryConfig, tmp_path, **{"per_device_train_batch_size": 4, **kw})


def _loss_rewards_grads(trainer, model, rows, with_margin):
    model.zero_grad()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    loss, outputs = trainer.compute_loss(model, batch, return_outputs=True)
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), outputs.logits.detach(), grads


@pytest.mark.parametrize("arch", list(MODELS))
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_rewards_loss_and_gradients_equal_plain_path(tmp_path, arch, case, attn):
    model, tok = MODELS[arch]()
    model.config._attn_implementation = attn
    model.train()
    rows = [dict(row, margin=0.1 * i, label=1.0 - 0.2 * i) for i, row in enumerate(CASES[case])]
    results = {}
    for sharing in (False, True):
        trainer = BradleyTerryTrainer(
            model=model,
            args=_args(tmp_path, prefix_sharing=sharing, label_smoothing=0.1, center_rewards_coefficient=0.01),
            train_dataset=Dataset.from_list(rows),
            processing_class=tok,
        )
        results[sharing] = _loss_rewards_grads(trainer, model, rows, with_margin=True)
    (loss, rewards, grads), (packed_loss, packed_rewards, packed_grads) = results[False], results[True]
    assert rewards.shape == packed_rewards.shape == (2 * len(rows), 1)
    torch.testing.assert_close(packed_rewards, rewards, **TOL)
    torch.testing.assert_close(packed_loss, loss, **TOL)
    assert grads.keys() == packed_grads.keys() and len(grads) == len(list(model.parameters()))
    for name in grads:
        torch.testing.assert_close(packed_grads[name], grads[name], **TOL, msg=name)
    assert any(g.abs().max() > 1e-4 for g in grads.values())  # the comparison is not between zeros


def test_packed_rows_are_shorter_and_length_is_packed_length(tmp_path):
    model, tok = tiny_llama_reward_model()
    rows = CASES["long_prompt"] + CASES["mixed_lengths"]
    plain = BradleyTerryTrainer(
        model=model, args=_args(tmp_path), train_dataset=Dataset.from_list(rows), processing_class=tok
    )
    shared = BradleyTerryTrainer(
        model=model,
        args=_args(tmp_path, prefix_sharing=True),
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
    )
    for row in shared.train_dataset:
        assert row["length"] == packed_length([row["chosen_ids"], row["rejected_ids"]])
        assert row["length"] < len(row["chosen_ids"]) + len(row["rejected_ids"])  # the prompt (and `<s>`) is shared
    assert sum(shared.train_dataset["length"]) < sum(
        len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in plain.train_dataset
    )


def test_length_grouped_batches_use_packed_length(tmp_path):
    model, tok = tiny_llama_reward_model()
    # (prompt chars, answer chars) -> longer side / packed length, in tokens (`<s>` + text + eos; the prompt shared)
    shape = {(42, 1): 47, (3, 38): 82, (39, 1): 44, (1, 36): 76}
    rows = [{"prompt": "p" * n, "chosen": "a" * m, "rejected": "b" * m} for n, m in shape]
    trainer = BradleyTerryTrainer(
        model=model,
        args=_args(tmp_path, prefix_sharing=True, train_sampling_strategy="group_by_length"),
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
    )
    sampler = trainer._get_train_sampler()
    assert type(sampler).__name__ == "LengthGroupedSampler"
    assert sampler.lengths == list(shape.values())  # not the longer sides (45, 43, 42, 39)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    assert batch["attention_mask"].sum(-1).tolist() == list(shape.values())


def _train(tmp_path, sharing, peft_config=None, **kw):
    model, tok = tiny_llama_reward_model()
    rows = CASES["mixed_lengths"] * 2 + CASES["long_prompt"] * 2
    trainer = BradleyTerryTrainer(
        model=model,
        args=_args(tmp_path / str(sharing), prefix_sharing=sharing, store_reward_stats=False, **kw),
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        peft_config=peft_config,
    )
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    return trainer.model, losses


def test_training_with_gradient_accumulation_matches_plain_path(tmp_path):
    plain, plain_losses = _train(tmp_path, False, per_device_train_batch_size=2, gradient_accumulation_steps=2)
    shared, shared_losses = _train(tmp_path, True, per_device_train_batch_size=2, gradient_accumulation_steps=2)
    assert len(shared_losses) == len(plain_losses) == 3
    assert shared_losses == pytest.approx(plain_losses, abs=1e-4)
    for (name, p), q in zip(plain.named_parameters(), shared.parameters(), strict=True):
        torch.testing.assert_close(q, p, atol=1e-4, rtol=1e-4, msg=name)


def test_lora_training_matches_plain_path(tmp_path):
    import peft

    lora = lambda: peft.LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules="all-linear")  # noqa: E731
    plain, plain_losses = _train(tmp_path, False, peft_config=lora())
    shared, shared_losses = _train(tmp_path, True, peft_config=lora())
    assert shared_losses == pytest.approx(plain_losses, abs=1e-4)
    trained = {n: p for n, p in plain.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trained) and any("modules_to_save" in n for n in trained)
    for name, p in shared.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p, trained[name], atol=1e-4, rtol=1e-4, msg=name)


def test_eval_and_reward_stats_with_prefix_sharing(tmp_path):
    model, tok = tiny_llama_reward_model()
    rows = CASES["mixed_lengths"]
    stats = {}
    for sharing in (False, True):
        trainer = BradleyTerryTrainer(
            model=model,
            args=_args(tmp_path, prefix_sharing=sharing),
            train_dataset=Dataset.from_list(rows),
            eval_dataset=Dataset.from_list(rows),
            processing_class=tok,
        )
        stats[sharing] = (trainer.evaluate(), trainer.store_reward_statistics())
    for key in ("eval_loss", "eval_accuracy", "eval_mean_reward", "eval_margin"):
        assert stats[True][0][key] == pytest.approx(stats[False][0][key], abs=1e-5), key
    assert stats[True][1] == pytest.approx(stats[False][1], abs=1e-5)


def test_encoder_is_rejected(tmp_path):
    model, tok = tiny_bert_reward_model()
    with pytest.raises(ValueError, match="prefix_sharing=True needs a causal \\(decoder\\) reward model"):
        BradleyTerryTrainer(
            model=model,
            args=_args(tmp_path, prefix_sharing=True),
            train_dataset=Dataset.from_list(CASES["long_prompt"]),
            processing_class=tok,
        )


def test_flash_attention_and_custom_collator_are_rejected(tmp_path):
    from trl_rewards.data.collators import PreferenceCollator

    model, tok = tiny_llama_reward_model()
    data = Dataset.from_list(CASES["long_prompt"])
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="attn_implementation='flash_attention_2'"):
        BradleyTerryTrainer(
            model=model, args=_args(tmp_path, prefix_sharing=True), train_dataset=data, processing_class=tok
        )
    model.config._attn_implementation = "sdpa"
    with pytest.raises(ValueError, match="custom data_collator \\(PreferenceCollator\\)"):
        BradleyTerryTrainer(
            model=model,
            args=_args(tmp_path, prefix_sharing=True),
            train_dataset=data,
            processing_class=tok,
            data_collator=PreferenceCollator(pad_token_id=tok.pad_token_id),
        )


def test_config_validates_prefix_sharing(tmp_path):
    with pytest.raises(ValueError, match="prefix_sharing must be True or False"):
        _args(tmp_path, prefix_sharing="yes")


# ------------------------------------------------------------------------------------------------- learnability


def _marker_pairs(n, seed):
    """As in `test_learnability`: random letters, then the marker `Y` (chosen) or `N` (rejected); here after a long
    shared prompt, which packing encodes once."""
    rng = random.Random(seed)
    word = lambda k: "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(k))  # noqa: E731
    return Dataset.from_list(
        [{"prompt": word(12) + ":", "chosen": word(6) + "Y", "rejected": word(6) + "N"} for _ in range(n)]
    )


def _marker_accuracy(tmp_path):
    model, tok = tiny_llama_reward_model(seed=0)
    args = _args(
        tmp_path,
        prefix_sharing=True,
        per_device_train_batch_size=16,
        lr_scheduler_type="constant",
        logging_steps=1000,
        disable_tqdm=True,
        max_steps=20,
        store_reward_stats=False,
    )
    trainer = BradleyTerryTrainer(model=model, args=args, train_dataset=_marker_pairs(320, 1), processing_class=tok)
    trainer.train()
    test = _marker_pairs(100, 2)
    chosen, rejected = RewardScorer(trainer.model, tok).score_pairs(test["prompt"], test["chosen"], test["rejected"])
    return float(np.mean(np.array(chosen) > np.array(rejected)))


def test_learns_marker_read_where_the_scorer_reads(tmp_path):
    """Trained packed, scored by the plain `RewardScorer` (each sequence alone, last token): held-out accuracy >= 0.95,
    so the packed rows supervise the positions the scorer reads."""
    assert _marker_accuracy(tmp_path) >= 0.95


def test_one_token_off_stays_near_chance(tmp_path, monkeypatch):
    """The packed read position moved one token earlier (the marker instead of the eos): the scorer's read-out is not
    trained and the held-out accuracy stays far below the bar."""
    import trl_rewards.data.prefix_sharing as prefix_sharing

    read = prefix_sharing.read_index
    monkeypatch.setattr(prefix_sharing, "read_index", lambda sequence, pad: read(sequence, pad) - 1)
    assert _marker_accuracy(tmp_path) < 0.8


def test_streaming_dataset_trains_with_prefix_sharing(tmp_path):
    """A stream (lengths computed lazily, row by row) trains packed like a map-style dataset, same losses."""
    losses = {}
    for streaming in (False, True):
        model, tok = tiny_llama_reward_model()
        data = Dataset.from_list(CASES["mixed_lengths"] * 2)
        trainer = BradleyTerryTrainer(
            model=model,
            args=_args(
                tmp_path / str(streaming),
                prefix_sharing=True,
                max_steps=2,
                store_reward_stats=False,
                train_sampling_strategy="sequential",  # the order a stream is read in
            ),
            train_dataset=data.to_iterable_dataset() if streaming else data,
            processing_class=tok,
        )
        trainer.train()
        losses[streaming] = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses[True]) == 2
    assert losses[True] == pytest.approx(losses[False], abs=1e-5)
