"""DeepSpeed ZeRO-2 and ZeRO-3 with two real processes on CPU (gloo): training completes, the loss trajectory
matches a single process with the same global batch, and the saved model (head included) reloads in a plain
process and scores identically on every rank.

Tolerance: 1e-5 absolute on each logged loss. fp32 on CPU, the same samples per global step (sequential sampler,
2 x 4 pairs vs 1 x 8 pairs); only the order of the cross-rank gradient reduction differs.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trl_rewards.scoring import RewardScorer
from trl_rewards.testing import save_tiny, tiny_llama_reward_model

pytestmark = [pytest.mark.multiprocess]
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WORKER = HERE / "bt_worker.py"

deepspeed = pytest.importorskip("deepspeed", reason="deepspeed is not installed (the `deepspeed` extra)")


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(REPO))
    env.pop("ACCELERATE_USE_DEEPSPEED", None)
    return env


def _run(cmd, out: Path):
    result = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600, cwd=out.parent)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    model, tok = tiny_llama_reward_model()
    model_dir = save_tiny(model, tok, root / "tiny")
    common = [str(WORKER), "--model", model_dir, "--steps", "4", "--n_pairs", "32"]
    _run([sys.executable, *common, "--out", str(root / "single"), "--batch_size", "8"], root / "single")
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    for stage in (2, 3):
        out = root / f"zero{stage}"
        _run(
            [
                accelerate,
                "launch",
                "--num_processes",
                "2",
                "--use_deepspeed",
                "--zero_stage",
                str(stage),
                "--deepspeed_config_file",
                str(REPO / "deepspeed_configs" / f"zero{stage}.json"),
                "--main_process_port",
                str(29500 + stage),
                *common,
                "--out",
                str(out),
                "--batch_size",
                "4",
            ],
            out,
        )
    return root


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.parametrize("stage", [2, 3])
def test_loss_trajectory_matches_single_process(runs, stage):
    single = _load(runs / "single" / "rank0.json")
    ranks = [_load(runs / f"zero{stage}" / f"rank{r}.json") for r in (0, 1)]
    assert all(r["deepspeed"] and r["world_size"] == 2 for r in ranks)
    assert len(single["losses"]) == 4
    for rank in ranks:
        assert rank["losses"] == pytest.approx(single["losses"], abs=1e-5)


@pytest.mark.parametrize("stage", [2, 3])
def test_saved_model_scores_identically_on_every_rank_and_in_a_plain_process(runs, stage):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bt_worker", WORKER)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    TEXTS = worker.TEXTS
    ranks = [_load(runs / f"zero{stage}" / f"rank{r}.json") for r in (0, 1)]
    assert ranks[0]["scores"] == ranks[1]["scores"]
    plain = RewardScorer.from_pretrained(str(runs / f"zero{stage}" / "model")).score([None] * len(TEXTS), TEXTS)
    assert plain == pytest.approx(ranks[0]["scores"], abs=1e-6)
    single = _load(runs / "single" / "rank0.json")
    assert plain == pytest.approx(single["scores"], abs=1e-5)
    assert ranks[0]["reward_mean"] == pytest.approx(single["reward_mean"], abs=1e-5)
