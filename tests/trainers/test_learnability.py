"""Every trainer learns a synthetic signal, measured where the package's scorers read it.

The label of each row is one marker character, the last character of the chosen answer / completion / step (`Y`
good, `N` bad), after random letters of a fixed length, so length is no shortcut. A tiny model is trained for a small
step budget and scored on held-out rows by [`RewardScorer`] / [`ProcessRewardScorer`], which read the positions the
package defines (a decoder's last token, a PRM's step separator, `[SEP]` for BERT, or step tag): a model that learns
(≥ 0.95) proves that the trainer supervises the positions that the scorers read. BT and ORM use the decoder, whose
read-out position (its last token) is the one that can be wrong (BERT's `[CLS]` read-out is fixed); the PRM is trained
in both families.

The `*_one_token_off` cases train with the supervised position moved one token earlier than where the scorer reads
(the step label, or a decoder's read-out token) and check that the held-out figure then stays far below the bar: the
assertions above can fail. A shift applied to training *and* scoring alike is learnable whenever the earlier position
still sees the marker (a causal model at the marker's own position sees it; an encoder sees everything), so only a
disagreement between the two can be caught by learning, and that is what these cases show.
"""

import random

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import LlamaForCausalLM

import trl_rewards.data.outcome_tokenization as outcome_tokenization
import trl_rewards.data.preference as preference
import trl_rewards.trainers.prm_trainer as prm_trainer
from trl_rewards.evaluation.verifier_metrics import binary_auroc, step_metrics
from trl_rewards.inference.sequence_scoring import RewardScorer
from trl_rewards.inference.step_scoring import ProcessRewardScorer
from trl_rewards.testing import (
    tiny_bert_reward_model,
    tiny_bert_token_classifier,
    tiny_llama_config,
    tiny_llama_reward_model,
    tiny_llama_token_classifier,
    tiny_llama_tokenizer,
    tiny_training_args,
)
from trl_rewards.trainers.bt_config import BradleyTerryConfig
from trl_rewards.trainers.bt_trainer import BradleyTerryTrainer
from trl_rewards.trainers.orm_config import OutcomeRewardConfig
from trl_rewards.trainers.orm_trainer import OutcomeRewardTrainer
from trl_rewards.trainers.prm_config import ProcessRewardConfig
from trl_rewards.trainers.prm_trainer import ProcessRewardTrainer

SEED = 0
BAR = 0.95  # held-out figure every trainer must reach
CHANCE_CEILING = 0.8  # what a model supervised one token off must stay under (chance is 0.5)
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _letters(rng, n):
    return "".join(rng.choice(LETTERS) for _ in range(n))


def _answer(rng, good):
    """Six random letters, then the marker: the only difference between a good and a bad answer."""
    return _letters(rng, 6) + ("Y" if good else "N")


def _pairs(n, seed):
    rng = random.Random(seed)
    return Dataset.from_list(
        [
            {"prompt": _letters(rng, 3) + ":", "chosen": _answer(rng, True), "rejected": _answer(rng, False)}
            for _ in range(n)
        ]
    )


def _outcomes(n, seed):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        rows.append({"prompt": _letters(rng, 3) + ":", "completion": _answer(rng, i % 2 == 0), "label": i % 2 == 0})
    return Dataset.from_list(rows)


def _solutions(n, seed):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        labels = [rng.random() < 0.5 for _ in range(rng.randint(1, 3))]
        rows.append(
            {"prompt": _letters(rng, 3) + ":", "completions": [_answer(rng, y) for y in labels], "labels": labels}
        )
    return Dataset.from_list(rows)


def _args(config_cls, tmp_path, **overrides):
    return tiny_training_args(
        config_cls,
        tmp_path,
        per_device_train_batch_size=16,
        lr_scheduler_type="constant",  # a linear decay over so few steps leaves the encoders half trained
        logging_steps=1000,
        disable_tqdm=True,
        seed=SEED,
        **overrides,
    )


# ----------------------------------------------------------------------------------------------- Bradley-Terry


def _bt_accuracy(tmp_path, family, max_steps):
    model, tokenizer = (tiny_llama_reward_model if family == "llama" else tiny_bert_reward_model)(seed=SEED)
    args = _args(BradleyTerryConfig, tmp_path, learning_rate=5e-3, max_steps=max_steps, store_reward_stats=False)
    trainer = BradleyTerryTrainer(model=model, args=args, train_dataset=_pairs(320, 1), processing_class=tokenizer)
    trainer.train()
    test = _pairs(100, 2)
    chosen, rejected = RewardScorer(trainer.model, tokenizer).score_pairs(
        test["prompt"], test["chosen"], test["rejected"]
    )
    return float(np.mean(np.array(chosen) > np.array(rejected)))


def test_bradley_terry_learns_marker(tmp_path):
    """Pairwise accuracy on held-out pairs, read by `RewardScorer` at the decoder's last token (the eos)."""
    assert _bt_accuracy(tmp_path, "llama", max_steps=20) >= BAR


# ------------------------------------------------------------------------------------------------------ outcome


def _orm_figures(tmp_path, family, supervision, max_steps):
    model, tokenizer = (tiny_llama_reward_model if family == "llama" else tiny_bert_reward_model)(seed=SEED)
    args = _args(OutcomeRewardConfig, tmp_path, learning_rate=5e-3, max_steps=max_steps, supervision=supervision)
    trainer = OutcomeRewardTrainer(model=model, args=args, train_dataset=_outcomes(320, 1), processing_class=tokenizer)
    trainer.train()
    test = _outcomes(100, 2)
    scores = np.array(RewardScorer(trainer.model, tokenizer).score(test["prompt"], test["completion"]))
    labels = np.array(test["label"])
    return float(np.mean((scores > 0) == labels)), binary_auroc(scores, labels)


@pytest.mark.parametrize("supervision, max_steps", [("final_token", 20), ("all_tokens", 40)])
def test_outcome_reward_learns_marker(tmp_path, supervision, max_steps):
    """Accuracy of σ(score) > 0.5 and AUROC on held-out completions, read by `RewardScorer` at the decoder's last
    token. `all_tokens` also trains every earlier completion token, which cannot see the marker yet: more steps."""
    accuracy, auroc = _orm_figures(tmp_path, "llama", supervision, max_steps)
    assert accuracy >= BAR and auroc >= BAR


# ------------------------------------------------------------------------------------------------------ process


def _prm_model(kind):
    if kind == "llama-classifier":
        return (*tiny_llama_token_classifier(seed=SEED), {})
    if kind == "bert-classifier":
        return (*tiny_bert_token_classifier(seed=SEED), {"step_separator": "[SEP]"})
    tokenizer = tiny_llama_tokenizer()
    torch.manual_seed(SEED)
    return LlamaForCausalLM(tiny_llama_config(tokenizer)), tokenizer, {"model_style": "lm"}


# (learning rate, steps of 16 solutions): BERT must learn from scratch which marker is just before each `[SEP]`
PRM_BUDGETS = {"llama-classifier": (5e-3, 30), "lm": (5e-3, 30), "bert-classifier": (5e-3, 80)}


def _prm_figures(tmp_path, kind):
    model, tokenizer, overrides = _prm_model(kind)
    lr, max_steps = PRM_BUDGETS[kind]
    args = _args(ProcessRewardConfig, tmp_path, learning_rate=lr, max_steps=max_steps, **overrides)
    trainer = ProcessRewardTrainer(
        model=model, args=args, train_dataset=_solutions(400, 1), processing_class=tokenizer
    )
    trainer.train()
    test = _solutions(100, 2)
    probs = ProcessRewardScorer(trainer.model, tokenizer).step_probabilities(test["prompt"], test["completions"])
    flat = [p for row in probs for p in row]
    labels = [y for row in test["labels"] for y in row]
    return step_metrics(probs, test["labels"])["step_accuracy"], binary_auroc(flat, labels)


@pytest.mark.parametrize("kind", ["llama-classifier", "bert-classifier", "lm"])
def test_process_reward_learns_marker(tmp_path, kind):
    """Step accuracy and AUROC on held-out solutions, read by `ProcessRewardScorer` at each step's label position
    (the separator after the step in classifier style, `[SEP]` for BERT; the step tag in lm style)."""
    accuracy, auroc = _prm_figures(tmp_path, kind)
    assert accuracy >= BAR and auroc >= BAR


# ------------------------------------------------------------------------------------------ read one token off


@pytest.mark.parametrize("kind", ["llama-classifier", "bert-classifier", "lm"])
def test_process_reward_one_token_off_stays_near_chance(tmp_path, monkeypatch, kind):
    """The trainer's step labels one token earlier (on the marker itself) than where the scorer reads them."""
    build = prm_trainer.build_step_format

    def shifted(*args, **kwargs):
        fmt = build(*args, **kwargs)
        return type(fmt)(fmt.style, fmt.lead, fmt.trail, fmt.step_end, fmt.label_offset - 1)

    monkeypatch.setattr(prm_trainer, "build_step_format", shifted)
    accuracy, _ = _prm_figures(tmp_path, kind)
    assert accuracy < CHANCE_CEILING


def _drop_eos(encode):
    def encode_without_eos(tokenizer, text):
        ids = encode(tokenizer, text)
        return ids[:-1] if ids[-1] == tokenizer.eos_token_id else ids

    return encode_without_eos


def test_bradley_terry_one_token_off_stays_near_chance(tmp_path, monkeypatch):
    """Decoder trained without the closing eos, so its read-out is the marker itself, one token before the eos at
    which `RewardScorer` reads."""
    monkeypatch.setattr(preference, "encode_text", _drop_eos(preference.encode_text))
    assert _bt_accuracy(tmp_path, "llama", max_steps=20) < CHANCE_CEILING


def test_outcome_reward_one_token_off_stays_near_chance(tmp_path, monkeypatch):
    monkeypatch.setattr(outcome_tokenization, "encode_text", _drop_eos(outcome_tokenization.encode_text))
    accuracy, _ = _orm_figures(tmp_path, "llama", "final_token", max_steps=20)
    assert accuracy < CHANCE_CEILING
