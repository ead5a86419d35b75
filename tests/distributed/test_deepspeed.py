"""DeepSpeed ZeRO-2 and ZeRO-3 with two real processes on CPU (gloo), for the Bradley-Terry and the process reward
trainer: training completes, the loss trajectory matches a single process with the same global batch, and the saved
model (head included) reloads in a plain process and scores identically on every rank.

Tolerance: 1e-5 absolute on each logged loss. fp32 on CPU, the same samples per global step (sequential sampler,
2 x 4 rows vs 1 x 8 rows); only the order of the cross-rank gradient reduction differs. For the PRM the two ranks hold
different numbers of labelled steps, so this also checks that its loss is the mean over the global batch's steps.
"""

import json
import sys
from pathlib import Path

import deepspeed  # noqa: F401  (always installed by ./dev: a missing or broken DeepSpeed fails here, never skips)
import pytest

from trl_rewards.inference.sequence_scoring import RewardScorer
from trl_rewards.inference.step_scoring import ProcessRewardScorer
from trl_rewards.testing import save_tiny, tiny_llama_reward_model, tiny_llama_token_classifier

pytestmark = [pytest.mark.multiprocess]
HERE = Path(__file__).resolve().parent
WORKER = HERE / "train_worker.py"


@pytest.fixture(scope="module", params=["bt", "prm"])
def runs(request, launcher, tmp_path_factory):
    kind = request.param
    root = tmp_path_factory.mktemp(f"ds-{kind}")
    model, tok = tiny_llama_reward_model() if kind == "bt" else tiny_llama_token_classifier()
    model_dir = save_tiny(model, tok, root / "tiny")
    common = [str(WORKER), "--kind", kind, "--model", model_dir, "--steps", "4", "--n_rows", "32"]
    launcher.run([sys.executable, *common, "--out", str(root / "single"), "--batch_size", "8"], root)
    for stage in (2, 3):
        out = root / f"zero{stage}"
        launcher.run([*launcher.deepspeed(stage), *common, "--out", str(out), "--batch_size", "4"], root)
    return kind, root


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _flat(scores):
    return [p for row in scores for p in row] if scores and isinstance(scores[0], list) else scores


@pytest.mark.parametrize("stage", [2, 3])
def test_loss_trajectory_matches_single_process(runs, stage):
    _, root = runs
    single = _load(root / "single" / "rank0.json")
    ranks = [_load(root / f"zero{stage}" / f"rank{r}.json") for r in (0, 1)]
    assert all(r["deepspeed"] and r["world_size"] == 2 for r in ranks)
    assert len(single["losses"]) == 4
    for rank in ranks:
        assert rank["losses"] == pytest.approx(single["losses"], abs=1e-5)


@pytest.mark.parametrize("stage", [2, 3])
def test_saved_model_scores_identically_on_every_rank_and_in_a_plain_process(runs, launcher, stage):
    kind, root = runs
    worker = launcher.module(WORKER)
    ranks = [_load(root / f"zero{stage}" / f"rank{r}.json") for r in (0, 1)]
    assert ranks[0]["scores"] == ranks[1]["scores"]
    saved = str(root / f"zero{stage}" / "model")
    if kind == "bt":
        plain = RewardScorer.from_pretrained(saved).score([None] * len(worker.TEXTS), worker.TEXTS)
    else:
        prompts, solutions = zip(*worker.SOLUTIONS, strict=True)
        plain = _flat(ProcessRewardScorer.from_pretrained(saved).step_probabilities(prompts, solutions))
        assert len(plain) == sum(len(s) for _, s in worker.SOLUTIONS)
    assert plain == pytest.approx(_flat(ranks[0]["scores"]), abs=1e-6)
    single = _load(root / "single" / "rank0.json")
    assert plain == pytest.approx(_flat(single["scores"]), abs=1e-5)
    if kind == "bt":
        assert ranks[0]["reward_mean"] == pytest.approx(single["reward_mean"], abs=1e-5)
