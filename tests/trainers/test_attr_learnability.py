"""The attribute trainer learns a synthetic two-attribute signal, measured where `AttributeScorer` reads it.

Each completion is six random lowercase letters and one marker that carries both ratings: `"ABCDE"[d]` for a correct
completion (`correct` rated 4), `"VWXYZ"[d]` for a wrong one (rated 0), `d` in 0-4 being the `level` rating; then the
decoder's closing eos, where the stock head reads; a quarter of the ratings of each
attribute are missing (None), so the masked loss is part of what is tested. A tiny Llama is trained for a small step
budget and its held-out attribute scores, read by [`AttributeScorer`], must order the rows as the ratings do: the
concordance (the fraction of row pairs with different ratings that the scores order the same way; AUROC for the
binary attribute) is >= 0.95 for each attribute.

`test_attribute_reward_one_token_off_stays_near_chance` trains with the read-out one token earlier (no closing eos:
the head reads the marker itself) while the scorer reads the eos, and checks that the held-out concordance stays far
below the bar, so the assertion above can fail.
"""

import random

import numpy as np
import torch
from datasets import Dataset
from transformers import AutoModelForSequenceClassification

import trl_rewards.data.attributes as attributes_data
from trl_rewards.inference.attribute_scoring import AttributeScorer
from trl_rewards.testing import tiny_llama_config, tiny_llama_tokenizer, tiny_training_args
from trl_rewards.trainers.attr_config import AttributeRewardConfig
from trl_rewards.trainers.attr_trainer import AttributeRewardTrainer

SEED = 0
BAR = 0.95
CHANCE_CEILING = 0.8
LETTERS = "abcdefghijklmnopqrstuvwxyz"
ATTRIBUTES = ["correct", "level"]


def _rows(n, seed, missing=0.0):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        good, level = rng.random() < 0.5, rng.randint(0, 4)
        completion = "".join(rng.choice(LETTERS) for _ in range(6)) + ("ABCDE" if good else "VWXYZ")[level]
        ratings = {"correct": 4.0 if good else 0.0, "level": float(level)}
        if missing:
            dropped = [name for name in ATTRIBUTES if rng.random() < missing]
            for name in dropped[: len(ATTRIBUTES) - 1]:  # a row keeps at least one rating
                ratings[name] = None
        rows.append(
            {"prompt": "".join(rng.choice(LETTERS) for _ in range(3)) + ":", "completion": completion, **ratings}
        )
    return Dataset.from_list(rows)


def concordance(scores, ratings) -> float:
    """Fraction of pairs with different ratings that `scores` order the same way (a tie in scores counts half)."""
    scores, ratings = np.asarray(scores, dtype=float), np.asarray(ratings, dtype=float)
    ds, dr = scores[:, None] - scores[None, :], ratings[:, None] - ratings[None, :]
    pairs = dr > 0
    return float(((ds > 0) + 0.5 * (ds == 0))[pairs].mean())


def _concordances(tmp_path, max_steps=100):
    tokenizer = tiny_llama_tokenizer()
    torch.manual_seed(SEED)
    model = AutoModelForSequenceClassification.from_config(tiny_llama_config(tokenizer, num_labels=2))
    args = tiny_training_args(
        AttributeRewardConfig,
        tmp_path,
        attributes=ATTRIBUTES,
        per_device_train_batch_size=16,
        lr_scheduler_type="constant",
        learning_rate=5e-3,
        max_steps=max_steps,
        logging_steps=1000,
        disable_tqdm=True,
        store_attribute_stats=False,
    )
    trainer = AttributeRewardTrainer(
        model=model, args=args, train_dataset=_rows(480, 1, missing=0.25), processing_class=tokenizer
    )
    trainer.train()
    test = _rows(150, 2)
    scores = AttributeScorer(trainer.model, tokenizer).score_attributes(test["prompt"], test["completion"])
    return [concordance(scores[:, k], test[name]) for k, name in enumerate(ATTRIBUTES)]


def test_concordance_hand_derived():
    """scores [0.1, 0.5, 0.3], ratings [0, 4, 2]: pairs with different ratings (2>0, 4>0, 4>2) all ordered right: 1.
    With scores [0.1, 0.1, 0.3]: (2 vs 0) right (1), (4 vs 0) a score tie (1/2), (4 vs 2) wrong (0): 1.5 / 3."""
    assert concordance([0.1, 0.5, 0.3], [0, 4, 2]) == 1.0
    assert concordance([0.1, 0.1, 0.3], [0, 4, 2]) == 1.5 / 3


def test_attribute_reward_learns_both_attributes(tmp_path):
    correct, level = _concordances(tmp_path)
    assert correct >= BAR and level >= BAR, (correct, level)


def test_attribute_reward_one_token_off_stays_near_chance(tmp_path, monkeypatch):
    encode = attributes_data.encode_prompt_completion

    def without_eos(tokenizer, prompt, completion):
        ids = encode(tokenizer, prompt, completion)
        return ids[:-1] if ids[-1] == tokenizer.eos_token_id else ids

    monkeypatch.setattr(attributes_data, "encode_prompt_completion", without_eos)
    correct, level = _concordances(tmp_path)
    assert max(correct, level) < CHANCE_CEILING, (correct, level)
