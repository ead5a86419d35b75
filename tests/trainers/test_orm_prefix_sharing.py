"""OutcomeRewardTrainer with `prefix_sharing=True`: the completions of one prompt are packed in one row with the prompt
encoded once; scores, loss and gradients equal the plain path (fp32, tiny Llama- and Qwen2-style decoders, 1e-5),
training and evaluation follow it, it learns a marker read where `RewardScorer` reads (and not one token off), and
what it cannot do is rejected with a clear error."""

import random

import numpy as np
import pytest
import torch
from datasets import Dataset

from trl_rewards.data.prefix_sharing import group_indices, group_outcomes, packed_length
from trl_rewards.inference.sequence_scoring import RewardScorer
from trl_rewards.testing import (
    tiny_bert_reward_model,
    tiny_llama_reward_model,
    tiny_qwen2_reward_model,
    tiny_training_args,
)
from trl_rewards.trainers.orm_config import OutcomeRewardConfig
from trl_rewards.trainers.orm_trainer import OutcomeRewardTrainer

TOL = dict(atol=1e-5, rtol=1e-5)
MODELS = {"llama": tiny_llama_reward_model, "qwen2": tiny_qwen2_reward_model}
LONG = "A long question that takes more tokens than all of its answers together: "
CASES = {
    # no prompt: pre-tokenized rows that share nothing (the packed row is the completions, each from position 0)
    "empty_prompt": [
        {"input_ids": [5, 20, 21, 2], "label": 1.0},
        {"input_ids": [6, 22, 2], "label": 0.0},
        {"input_ids": [7, 2], "label": 1.0},
    ],
    "long_prompt": [
        {"prompt": LONG, "completion": "yes", "label": True},
        {"prompt": LONG, "completion": "no", "label": False},
        {"prompt": LONG, "completion": "maybe", "label": True},
        {"prompt": "Another long prompt, again much longer than what follows. ", "completion": "ok", "label": False},
        {"prompt": "Another long prompt, again much longer than what follows. ", "completion": "x", "label": True},
    ],
    # interleaved prompts, groups of 1, 2 and 4 (cut 3 + 1 by completions_per_row=3), completions of mixed lengths
    "mixed_lengths": [
        {"prompt": "Q: ", "completion": "a fairly long answer here", "label": True},
        {"prompt": "A medium sized prompt? ", "completion": "x", "label": False},
        {"prompt": "Q: ", "completion": "short", "label": False},
        {"prompt": "P ", "completion": "alone", "label": True},
        {"prompt": "A medium sized prompt? ", "completion": "same start, then A", "label": True},
        {"prompt": "Q: ", "completion": "same start, then B", "label": True},
        {"prompt": "Q: ", "completion": "a", "label": False},
    ],
}


def _args(tmp_path, **kw):
    return tiny_training_args(OutcomeRewardConfig, tmp_path, **{"completions_per_row": 3, **kw})


def _trainer(model, tok, tmp_path, rows, sharing, **kw):
    return OutcomeRewardTrainer(
        model=model,
        args=_args(tmp_path / str(sharing), prefix_sharing=sharing, **kw),
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
    )


def _grouped_by_hand(case):
    """The pre-tokenized rows of `case` as the packed path's examples (one group: they share no prompt text), or
    `None` for text rows, which the trainer groups itself."""
    rows = CASES[case]
    if "input_ids" not in rows[0]:
        return None
    return group_outcomes([r["input_ids"] for r in rows], [r["label"] for r in rows], ["none"] * len(rows), 3)


def _scores_loss_grads(trainer, model, examples):
    model.zero_grad()
    loss, outputs = trainer.compute_loss(model, trainer.data_collator(examples), return_outputs=True)
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), outputs["logits"].detach(), grads


@pytest.mark.parametrize("arch", list(MODELS))
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_scores_loss_and_gradients_equal_plain_path(tmp_path, arch, case, attn):
    model, tok = MODELS[arch]()
    model.config._attn_implementation = attn
    model.train()
    rows = CASES[case]
    plain = _trainer(model, tok, tmp_path, rows, False)
    grouped = _grouped_by_hand(case)
    if grouped is None:
        shared = _trainer(model, tok, tmp_path, rows, True)
        grouped = [shared.train_dataset[i] for i in range(len(shared.train_dataset))]
        order = [i for g in group_indices([r["prompt"] for r in rows]) for i in g]  # completions as packed, in order
    else:
        shared = OutcomeRewardTrainer(
            model=model,
            args=_args(tmp_path / "grouped", prefix_sharing=True),
            train_dataset=Dataset.from_list(grouped),
            processing_class=tok,
        )
        order = list(range(len(rows)))
    assert sum(len(e["labels"]) for e in grouped) == len(rows)
    loss, scores, grads = _scores_loss_grads(plain, model, [plain.train_dataset[i] for i in range(len(rows))])
    packed_loss, packed_scores, packed_grads = _scores_loss_grads(shared, model, grouped)
    torch.testing.assert_close(packed_scores, scores[order], **TOL)
    torch.testing.assert_close(packed_loss, loss, **TOL)
    assert grads.keys() == packed_grads.keys() and len(grads) == len(list(model.parameters()))
    for name in grads:
        torch.testing.assert_close(packed_grads[name], grads[name], **TOL, msg=name)
    assert any(g.abs().max() > 1e-4 for g in grads.values())  # the comparison is not between zeros


def test_rows_grouped_by_prompt_with_packed_lengths(tmp_path):
    model, tok = tiny_llama_reward_model()
    rows = CASES["mixed_lengths"] + CASES["long_prompt"]
    plain = _trainer(model, tok, tmp_path, rows, False)
    shared = _trainer(model, tok, tmp_path, rows, True)
    examples = list(shared.train_dataset)
    # Q: 4 rows -> 3 + 1, medium 2, P 1, LONG 3, another 2 (groups in order of first appearance)
    assert [len(e["labels"]) for e in examples] == [3, 1, 2, 1, 3, 2]
    for e in examples:
        assert e["length"] == packed_length(e["sequences"])
    assert sum(e["length"] for e in examples) < 0.7 * sum(plain.train_dataset["length"])
    batch = shared.data_collator(examples[:3])
    assert batch["completion_index"][:, 0].tolist() == [0, 0, 0, 1, 2, 2]
    assert batch["label"].tolist() == [1.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    assert batch["attention_mask"].sum(-1).tolist() == [e["length"] for e in examples[:3]]


def _train(tmp_path, sharing, **kw):
    """Prompts of 2 completions each, in order: a packed batch of 2 rows holds the 4 completions of a plain batch."""
    model, tok = tiny_llama_reward_model()
    rows = [r for p in range(6) for r in _two_answers(p)]
    batch = 2 if sharing else 4
    trainer = _trainer(
        model,
        tok,
        tmp_path,
        rows,
        sharing,
        completions_per_row=2,
        per_device_train_batch_size=batch // 2,
        gradient_accumulation_steps=2,
        train_sampling_strategy="sequential",
        **kw,
    )
    trainer.train()
    return trainer, [log["loss"] for log in trainer.state.log_history if "loss" in log]


def _two_answers(p):
    prompt = f"Problem {p}: " + "add the numbers. " * (1 + p % 3)
    return [
        {"prompt": prompt, "completion": "the answer is " + str(p) * (1 + p % 2), "label": True},
        {"prompt": prompt, "completion": "no idea", "label": False},
    ]


def test_training_with_gradient_accumulation_matches_plain_path(tmp_path):
    plain, plain_losses = _train(tmp_path, False)
    shared, shared_losses = _train(tmp_path, True)
    assert len(shared_losses) == len(plain_losses) == 3
    assert shared_losses == pytest.approx(plain_losses, abs=1e-4)
    for (name, p), q in zip(plain.model.named_parameters(), shared.model.parameters(), strict=True):
        torch.testing.assert_close(q, p, atol=1e-4, rtol=1e-4, msg=name)


def test_evaluation_metrics_equal_plain_path(tmp_path):
    model, tok = tiny_llama_reward_model()
    rows = CASES["mixed_lengths"] + CASES["long_prompt"]
    metrics = {}
    for sharing in (False, True):
        trainer = OutcomeRewardTrainer(
            model=model,
            args=_args(tmp_path / str(sharing), prefix_sharing=sharing),
            train_dataset=Dataset.from_list(rows),
            eval_dataset=Dataset.from_list(rows),
            processing_class=tok,
        )
        metrics[sharing] = trainer.evaluate()
    for key in ("accuracy", "auroc", "ece", "brier", "mean_score", "positive_rate"):
        assert metrics[True][f"eval_{key}"] == pytest.approx(metrics[False][f"eval_{key}"], abs=1e-5), key


def test_what_it_cannot_do_is_rejected(tmp_path):
    from trl_rewards.data.collators import OutcomeCollator

    rows = CASES["long_prompt"]
    model, tok = tiny_bert_reward_model()
    with pytest.raises(ValueError, match="prefix_sharing=True needs a causal \\(decoder\\) reward model"):
        _trainer(model, tok, tmp_path, rows, True)
    model, tok = tiny_llama_reward_model()
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="attn_implementation='flash_attention_2'"):
        _trainer(model, tok, tmp_path, rows, True)
    model.config._attn_implementation = "sdpa"
    with pytest.raises(ValueError, match="custom data_collator \\(OutcomeCollator\\)"):
        OutcomeRewardTrainer(
            model=model,
            args=_args(tmp_path, prefix_sharing=True),
            train_dataset=Dataset.from_list(rows),
            processing_class=tok,
            data_collator=OutcomeCollator(pad_token_id=tok.pad_token_id),
        )
    grouped = group_outcomes([[5, 2], [6, 2], [7, 2], [8, 2]], [1.0, 0.0, 1.0, 0.0], ["a"] * 4, k=4)
    with pytest.raises(ValueError, match="train row 0: a grouped row needs 1 to completions_per_row=3 sequences"):
        OutcomeRewardTrainer(
            model=model,
            args=_args(tmp_path, prefix_sharing=True),
            train_dataset=Dataset.from_list(grouped),
            processing_class=tok,
        )
    with pytest.raises(ValueError, match="needs a map-style Dataset; got IterableDataset"):
        OutcomeRewardTrainer(
            model=model,
            args=_args(tmp_path, prefix_sharing=True, max_steps=1),
            train_dataset=Dataset.from_list(rows).to_iterable_dataset(),
            processing_class=tok,
        )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"prefix_sharing": "yes"}, "prefix_sharing must be True or False"),
        ({"prefix_sharing": True, "completions_per_row": 0}, "completions_per_row must be an integer >= 1"),
        ({"prefix_sharing": True, "supervision": "all_tokens"}, "supports supervision='final_token' only"),
        ({"prefix_sharing": True, "too_long": "drop"}, "use too_long='truncate' or 'error', not 'drop'"),
    ],
)
def test_config_validates_prefix_sharing(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _args(tmp_path, **kwargs)


# ------------------------------------------------------------------------------------------------- learnability


def _marker_rows(n_prompts, seed):
    """As in `test_learnability`: random letters, then the marker `Y` (correct) or `N`; here 4 completions of each of
    a long prompt, which packing encodes once."""
    rng = random.Random(seed)
    word = lambda k: "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(k))  # noqa: E731
    rows = []
    for _ in range(n_prompts):
        prompt = word(12) + ":"
        rows += [{"prompt": prompt, "completion": word(6) + "YN"[g % 2], "label": g % 2 == 0} for g in range(4)]
    return Dataset.from_list(rows)


def _marker_accuracy(tmp_path):
    model, tok = tiny_llama_reward_model(seed=0)
    args = _args(
        tmp_path,
        prefix_sharing=True,
        completions_per_row=4,
        per_device_train_batch_size=4,  # 4 packed rows: 16 completions per step, as the plain learnability test
        lr_scheduler_type="constant",
        logging_steps=1000,
        disable_tqdm=True,
        max_steps=20,
    )
    trainer = OutcomeRewardTrainer(model=model, args=args, train_dataset=_marker_rows(80, 1), processing_class=tok)
    trainer.train()
    test = _marker_rows(25, 2)
    scores = np.array(RewardScorer(trainer.model, tok).score(test["prompt"], test["completion"]))
    return float(np.mean((scores > 0) == np.array(test["label"])))


def test_learns_marker_read_where_the_scorer_reads(tmp_path):
    """Trained packed, scored by the plain `RewardScorer` (each completion alone, last token): held-out accuracy
    >= 0.95, so the packed rows supervise the positions the scorer reads."""
    assert _marker_accuracy(tmp_path) >= 0.95


def test_one_token_off_stays_near_chance(tmp_path, monkeypatch):
    """The packed read position moved one token earlier (the marker instead of the eos): the scorer's read-out is not
    trained and the held-out accuracy stays far below the bar."""
    import trl_rewards.data.prefix_sharing as prefix_sharing

    read = prefix_sharing.read_index
    monkeypatch.setattr(prefix_sharing, "read_index", lambda sequence, pad: read(sequence, pad) - 1)
    assert _marker_accuracy(tmp_path) < 0.8
