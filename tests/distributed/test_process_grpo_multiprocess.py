"""ProcessGRPOTrainer on two CPU processes (`torch.distributed.run`, gloo), one GRPO group of four completions split
across them: every rank's per-token advantages equal a single-process recomputation over the whole group (outcome
advantage with the group's mean/std, step rewards normalized over the steps of *both* ranks), and the step metrics
are the same on both ranks."""

import json
import math
from pathlib import Path

import pytest
import torch

from trl_rewards.step_advantages import (
    combine_advantages,
    normalize_step_rewards,
    step_end_tokens,
    token_advantages,
    token_char_ends,
)
from trl_rewards.testing import tiny_llama_tokenizer

pytestmark = [pytest.mark.multiprocess]
WORKER = Path(__file__).resolve().parent / "process_grpo_worker.py"


@pytest.fixture(scope="module")
def ranks(launcher, tmp_path_factory):
    out = tmp_path_factory.mktemp("process_grpo")
    launcher.run([*launcher.torchrun(), str(WORKER), "--out", str(out)], out, timeout=300)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_advantages_are_normalized_over_the_group_across_ranks(ranks, launcher):
    worker = launcher.module(WORKER)
    tokenizer = tiny_llama_tokenizer()
    rank0, rank1 = ranks
    assert [rank0["world_size"], rank1["world_size"]] == [2, 2]
    assert len(rank0["batches"]) == len(rank1["batches"]) == 2
    for batch0, batch1 in zip(rank0["batches"], rank1["batches"], strict=True):
        # one prompt, four completions: two on each rank
        assert len(set(batch0["prompts"] + batch1["prompts"])) == 1 and len(batch0["prompts"]) == 2
        ids = batch0["completion_ids"] + batch1["completion_ids"]
        texts = [tokenizer.decode(i, skip_special_tokens=True) for i in ids]
        outcome = torch.tensor(worker.vowel_count(None, texts))
        outcome = (outcome - outcome.mean()) / (outcome.std() + 1e-4)
        steps = worker.TripleSteps()(None, texts)
        tokens = [
            step_end_tokens([e for e, _ in s or []], token_char_ends(tokenizer, i))
            for s, i in zip(steps, ids, strict=True)
        ]
        normalized = normalize_step_rewards([[r for _, r in s or []] for s in steps], worker.NUM_GENERATIONS)
        length = max(len(i) for i in ids)
        expected = combine_advantages(outcome, token_advantages(tokens, normalized, length), 0.5, 1.0)
        got = batch0["advantages"] + batch1["advantages"]
        for row, (values, completion) in enumerate(zip(got, ids, strict=True)):
            assert values == pytest.approx(expected[row, : len(completion)].tolist(), abs=1e-4), row
        # the normalization really used the other rank's steps: a per-rank one would differ
        local = normalize_step_rewards([[r for _, r in s or []] for s in steps[:2]], 2)
        assert local != normalized[:2]


def test_step_metrics_identical_on_both_ranks(ranks):
    logs0, logs1 = ranks[0]["logs"], ranks[1]["logs"]
    assert len(logs0) == 2 and all(math.isfinite(entry["loss"]) for entry in logs0)
    for entry0, entry1 in zip(logs0, logs1, strict=True):
        steps0 = {key: value for key, value in entry0.items() if key.startswith("steps/")}
        assert "steps/triples/mean_step_reward" in steps0 and "steps/process_advantage_abs_mean" in steps0
        assert steps0 == {key: value for key, value in entry1.items() if key.startswith("steps/")}
